//! handoff: a mail filter for Postfix that decides, at delivery time, what happens to mail for
//! departed, disabled, frozen and deleted accounts and for aliases.

pub mod milter;
