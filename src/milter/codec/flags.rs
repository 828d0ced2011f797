//! Negotiation flags: what the filter may do to a message ([`Actions`]) and which events the MTA
//! sends and which need no reply ([`Protocol`]), both settled in OPTNEG.

use std::fmt;
use std::ops::{BitAnd, BitAndAssign, BitOr, BitOrAssign};

/// Defines a `u32` flag newtype with named bits, set operations and a `Debug` that names them.
///
/// Unknown bits are kept, not dropped: Postfix passes protocol bits it does not know through
/// (Postfix `milter8.c` `milter8_connect`), and a newer MTA may offer bits we have no name for.
macro_rules! flags {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$flag_meta:meta])* const $flag:ident = $bit:expr; )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub struct $name(u32);

        impl $name {
            $( $(#[$flag_meta])* pub const $flag: Self = Self($bit); )*

            /// The bits with a name, in wire order, for `Debug`.
            const NAMED: &[(&str, u32)] = &[$( (stringify!($flag), $bit) ),*];

            /// No bit set.
            pub const fn empty() -> Self {
                Self(0)
            }

            /// Wraps raw bits as read from or written to the wire; unknown bits are kept.
            pub const fn from_bits(bits: u32) -> Self {
                Self(bits)
            }

            /// The raw bits.
            pub const fn bits(self) -> u32 {
                self.0
            }

            /// Whether every bit of `other` is set in `self`.
            pub const fn contains(self, other: Self) -> bool {
                self.0 & other.0 == other.0
            }

            /// Both sets together; `const` so that flag sets can be constants.
            pub const fn union(self, other: Self) -> Self {
                Self(self.0 | other.0)
            }

            /// Whether no bit is set.
            pub const fn is_empty(self) -> bool {
                self.0 == 0
            }
        }

        impl BitOr for $name {
            type Output = Self;
            fn bitor(self, rhs: Self) -> Self {
                Self(self.0 | rhs.0)
            }
        }

        impl BitOrAssign for $name {
            fn bitor_assign(&mut self, rhs: Self) {
                self.0 |= rhs.0;
            }
        }

        impl BitAnd for $name {
            type Output = Self;
            fn bitand(self, rhs: Self) -> Self {
                Self(self.0 & rhs.0)
            }
        }

        impl BitAndAssign for $name {
            fn bitand_assign(&mut self, rhs: Self) {
                self.0 &= rhs.0;
            }
        }

        /// Lists the named bits, then any unknown ones in hex: `Actions(ADDHDRS | 0x8000)`.
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}(", stringify!($name))?;
                let mut rest = self.0;
                let mut first = true;
                for &(name, bit) in Self::NAMED {
                    if rest & bit != 0 {
                        if !first {
                            f.write_str(" | ")?;
                        }
                        f.write_str(name)?;
                        rest &= !bit;
                        first = false;
                    }
                }
                if rest != 0 || first {
                    if !first {
                        f.write_str(" | ")?;
                    }
                    write!(f, "{rest:#x}")?;
                }
                f.write_str(")")
            }
        }
    };
}

flags! {
    /// What the filter may do to a message (`SMFIF_*`, libmilter `mfdef.h`), negotiated in
    /// OPTNEG. Postfix offers all nine (0x1FF) and rejects a filter that asks for more than it
    /// offered (Postfix `milter8.c` `milter8_connect`).
    pub struct Actions {
        /// Add headers (ADDHEADER, INSHEADER).
        const ADDHDRS = 0x1;
        /// Replace the body (REPLBODY).
        const CHGBODY = 0x2;
        /// Add recipients (ADDRCPT).
        const ADDRCPT = 0x4;
        /// Delete recipients (DELRCPT).
        const DELRCPT = 0x8;
        /// Change or delete headers (CHGHEADER).
        const CHGHDRS = 0x10;
        /// Quarantine the message (QUARANTINE).
        const QUARANTINE = 0x20;
        /// Change the envelope sender (CHGFROM).
        const CHGFROM = 0x40;
        /// Add recipients with ESMTP parameters (ADDRCPT_PAR).
        const ADDRCPT_PAR = 0x80;
        /// Send the list of macros wanted per stage in the OPTNEG reply.
        const SETSYMLIST = 0x100;
    }
}

flags! {
    /// Which events the MTA should not send and which need no reply (`SMFIP_*`, libmilter
    /// `mfdef.h`), negotiated in OPTNEG. Postfix offers 0x1FFFFF at milter protocol 6 and never
    /// offers the `MDS_*` bits.
    pub struct Protocol {
        /// Do not send CONNECT.
        const NOCONNECT = 0x1;
        /// Do not send HELO.
        const NOHELO = 0x2;
        /// Do not send MAIL.
        const NOMAIL = 0x4;
        /// Do not send RCPT.
        const NORCPT = 0x8;
        /// Do not send BODY.
        const NOBODY = 0x10;
        /// Do not send HEADER.
        const NOHDRS = 0x20;
        /// Do not send EOH.
        const NOEOH = 0x40;
        /// No reply to HEADER (libmilter also calls it `SMFIP_NOHREPL`).
        const NR_HDR = 0x80;
        /// Do not send UNKNOWN.
        const NOUNKNOWN = 0x100;
        /// Do not send DATA.
        const NODATA = 0x200;
        /// The MTA understands SKIP.
        const SKIP = 0x400;
        /// Also send the recipients the MTA rejected.
        const RCPT_REJ = 0x800;
        /// No reply to CONNECT.
        const NR_CONN = 0x1000;
        /// No reply to HELO.
        const NR_HELO = 0x2000;
        /// No reply to MAIL.
        const NR_MAIL = 0x4000;
        /// No reply to RCPT.
        const NR_RCPT = 0x8000;
        /// No reply to DATA.
        const NR_DATA = 0x10000;
        /// No reply to UNKNOWN.
        const NR_UNKN = 0x20000;
        /// No reply to EOH.
        const NR_EOH = 0x40000;
        /// No reply to BODY.
        const NR_BODY = 0x80000;
        /// Send header values with their leading space.
        const HDR_LEADSPC = 0x100000;
        /// Payloads up to 256 KiB - 1 (libmilter only; Postfix never offers it).
        const MDS_256K = 0x10000000;
        /// Payloads up to 1 MiB - 1 (libmilter only; Postfix never offers it).
        const MDS_1M = 0x20000000;
    }
}

impl Protocol {
    /// libmilter's older name for [`Protocol::NR_HDR`].
    pub const NOHREPL: Self = Self::NR_HDR;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_have_the_mfdef_values_and_set_operations() {
        let actions = Actions::ADDHDRS | Actions::CHGHDRS | Actions::ADDRCPT_PAR;
        assert_eq!(actions.bits(), 0x91);
        assert!(actions.contains(Actions::CHGHDRS | Actions::ADDHDRS));
        assert!(!actions.contains(Actions::CHGBODY));
        assert_eq!((actions & Actions::from_bits(0x1FF)).bits(), 0x91);
        assert_eq!(Actions::SETSYMLIST.bits(), 0x100);
        assert!(Actions::empty().is_empty());

        assert_eq!(Protocol::NR_HDR, Protocol::NOHREPL);
        assert_eq!(Protocol::NR_HDR.bits(), 0x80);
        assert_eq!(Protocol::HDR_LEADSPC.bits(), 0x10_0000);
        assert_eq!(Protocol::MDS_256K.bits(), 0x1000_0000);
        assert_eq!(Protocol::MDS_1M.bits(), 0x2000_0000);
        // Every named bit below MDS is what Postfix offers at milter protocol 6.
        let named = Protocol::NAMED
            .iter()
            .filter(|(name, _)| !name.starts_with("MDS"))
            .fold(0, |all, (_, bit)| all | bit);
        assert_eq!(named, 0x1F_FFFF);
        let named = Actions::NAMED.iter().fold(0, |all, (_, bit)| all | bit);
        assert_eq!(named, 0x1FF);

        let mut p = Protocol::NOCONNECT;
        p |= Protocol::NR_BODY;
        p &= Protocol::NR_BODY | Protocol::SKIP;
        assert_eq!(p, Protocol::NR_BODY);
    }

    #[test]
    fn flags_debug_names_known_bits_and_shows_the_rest_in_hex() {
        assert_eq!(
            format!("{:?}", Actions::ADDHDRS | Actions::from_bits(0x8000)),
            "Actions(ADDHDRS | 0x8000)"
        );
        assert_eq!(
            format!("{:?}", Protocol::NOHELO | Protocol::NR_HDR),
            "Protocol(NOHELO | NR_HDR)"
        );
        assert_eq!(format!("{:?}", Actions::empty()), "Actions(0x0)");
    }
}
