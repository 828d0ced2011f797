//! The wire's code bytes: one per command, reply and CONNECT address family, as libmilter
//! `mfdef.h` names them.

/// Command codes, MTA to filter (`SMFIC_*`, libmilter `mfdef.h`).
pub(super) mod cmd {
    pub const ABORT: u8 = b'A';
    pub const BODY: u8 = b'B';
    pub const CONNECT: u8 = b'C';
    pub const MACRO: u8 = b'D';
    pub const BODYEOB: u8 = b'E';
    pub const HELO: u8 = b'H';
    pub const QUIT_NC: u8 = b'K';
    pub const HEADER: u8 = b'L';
    pub const MAIL: u8 = b'M';
    pub const EOH: u8 = b'N';
    pub const OPTNEG: u8 = b'O';
    pub const QUIT: u8 = b'Q';
    pub const RCPT: u8 = b'R';
    pub const DATA: u8 = b'T';
    pub const UNKNOWN: u8 = b'U';
}

/// Reply codes, filter to MTA (`SMFIR_*`, libmilter `mfdef.h`). `f` (CONN_FAIL) and `l`
/// (SETSYMLIST) are defined there too but are protocol errors as replies to Postfix, so they are
/// unknown here.
pub(super) mod rep {
    pub const ADDRCPT: u8 = b'+';
    pub const DELRCPT: u8 = b'-';
    pub const ADDRCPT_PAR: u8 = b'2';
    pub const SHUTDOWN: u8 = b'4';
    pub const ACCEPT: u8 = b'a';
    pub const REPLBODY: u8 = b'b';
    pub const CONTINUE: u8 = b'c';
    pub const DISCARD: u8 = b'd';
    pub const CHGFROM: u8 = b'e';
    pub const ADDHEADER: u8 = b'h';
    pub const INSHEADER: u8 = b'i';
    pub const CHGHEADER: u8 = b'm';
    pub const OPTNEG: u8 = b'O';
    pub const PROGRESS: u8 = b'p';
    pub const QUARANTINE: u8 = b'q';
    pub const REJECT: u8 = b'r';
    pub const SKIP: u8 = b's';
    pub const TEMPFAIL: u8 = b't';
    pub const REPLYCODE: u8 = b'y';
}

/// Address family bytes of CONNECT (`SMFIA_*`, libmilter `mfdef.h`).
pub(super) mod fam {
    pub const UNKNOWN: u8 = b'U';
    pub const UNIX: u8 = b'L';
    pub const INET: u8 = b'4';
    pub const INET6: u8 = b'6';
}
