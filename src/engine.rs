//! The decision engine: what happens to mail for one recipient, and whether a sender may send.
//!
//! Pure: `(policy, address, today) → decision`. No I/O, no clock, no tokio; the caller passes the
//! date, so `until`/`then` switches are testable on both sides of the date and every front end
//! (milter, LMTP, `handoff explain`) gets the same answer for the same input.
//!
//! What happens to mail for a departed user is decided here and nowhere else:
//! - not in a local domain, or not listed: delivered as addressed;
//! - `active`: delivered;
//! - `departed`: delivered to each `forward` target (whose own rules apply in turn), plus the
//!   account itself when `keep_copy`; the auto-reply template is planned;
//! - `disabled` / `deleted`: refused with a 5xx, `frozen`: deferred with a 4xx;
//! - an alias: each member's rules apply. Inside an expansion a refused member is dropped (and
//!   said so in the trace) while the others still get the mail; a *deferred* member defers the
//!   whole recipient, because delivering to the rest now and the frozen member later is not
//!   possible in one transaction, and losing the frozen member's copy is not acceptable. When no
//!   member is left, the recipient is refused with the first member's reply.

use jiff::civil::Date;
use serde::Serialize;

use crate::address::Address;
use crate::policy::{MAX_DEPTH, Node, Policy, SmtpReply, State};

/// What the MTA should do with one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", content = "reply", rename_all = "lowercase")]
pub enum Verdict {
    /// Accept; deliver to [`Resolution::deliver`].
    Deliver,
    /// Refuse permanently (5xx).
    Reject(SmtpReply),
    /// Refuse for now (4xx); the sender retries and nothing is lost.
    Defer(SmtpReply),
}

/// The rule that decided a recipient, as a small fixed set (metric labels, journal records).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// The domain is not one of ours: passed untouched.
    NotLocal,
    /// A local address with no policy entry: delivered.
    Unlisted,
    Active,
    Alias,
    Departed,
    Disabled,
    Frozen,
    Deleted,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::NotLocal => "not_local",
            Rule::Unlisted => "unlisted",
            Rule::Active => "active",
            Rule::Alias => "alias",
            Rule::Departed => "departed",
            Rule::Disabled => "disabled",
            Rule::Frozen => "frozen",
            Rule::Deleted => "deleted",
        }
    }

    fn of(state: State) -> Rule {
        match state {
            State::Active => Rule::Active,
            State::Departed => Rule::Departed,
            State::Disabled => Rule::Disabled,
            State::Frozen => Rule::Frozen,
            State::Deleted => Rule::Deleted,
        }
    }
}

/// What happened to one recipient, as a small fixed set (metric labels, log lines). Derived from
/// the verdict and the state that decided it, never from reply texts (an admin's `reply` may say
/// anything).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Delivered as addressed (active, unlisted, not local, or a departed account's own copy
    /// only).
    Deliver,
    /// A departed account's mail went (also) elsewhere.
    Forward,
    /// An alias expanded.
    Alias,
    RejectDisabled,
    RejectDeleted,
    DeferFrozen,
    /// The sender's account may not send (counted once per refused transaction).
    BlockSender,
}

impl Decision {
    pub const ALL: [Decision; 7] = [
        Decision::Deliver,
        Decision::Forward,
        Decision::Alias,
        Decision::RejectDisabled,
        Decision::RejectDeleted,
        Decision::DeferFrozen,
        Decision::BlockSender,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Deliver => "deliver",
            Decision::Forward => "forward",
            Decision::Alias => "alias",
            Decision::RejectDisabled => "reject_disabled",
            Decision::RejectDeleted => "reject_deleted",
            Decision::DeferFrozen => "defer_frozen",
            Decision::BlockSender => "block_sender",
        }
    }
}

/// An auto-reply the auto-reply component should consider (it applies RFC 3834 rules and the
/// once-per-sender memory; the engine only says that the account asks for one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AutoReplyPlan {
    pub account: Address,
    pub template: String,
}

/// One step of the reasoning, for `handoff explain`, logs and the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    NotLocal {
        address: Address,
    },
    Unlisted {
        address: Address,
    },
    /// `address` matched the entry of `base` after removing its `+detail`.
    Detail {
        address: Address,
        base: Address,
    },
    Alias {
        address: Address,
        members: Vec<Address>,
    },
    /// The account's state in force; `configured` differs when `until` has passed.
    State {
        address: Address,
        state: State,
        configured: State,
        until: Option<Date>,
    },
    KeepCopy {
        address: Address,
    },
    NoCopy {
        address: Address,
    },
    Forward {
        from: Address,
        to: Address,
    },
    Deliver {
        address: Address,
    },
    Refuse {
        address: Address,
        reply: SmtpReply,
    },
    /// A member of an alias or forward list was refused; the others still get the mail.
    Dropped {
        address: Address,
        reply: SmtpReply,
    },
    AutoReply {
        account: Address,
        template: String,
    },
    /// The message already carries handoff's loop marker for this departed account: it stays in
    /// the account's mailbox and is not forwarded again.
    LoopMarked {
        account: Address,
    },
}

/// The decision for one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resolution {
    pub recipient: Address,
    pub verdict: Verdict,
    pub rule: Rule,
    /// Final envelope recipients, de-duplicated, in order; empty unless the verdict is Deliver.
    pub deliver: Vec<Address>,
    pub autoreplies: Vec<AutoReplyPlan>,
    pub steps: Vec<Step>,
}

impl Resolution {
    /// Whether the envelope changes: the recipient is not simply delivered as addressed.
    pub fn rewritten(&self) -> bool {
        !(self.deliver.len() == 1 && self.deliver[0] == self.recipient)
    }

    /// The decision, by the state that decided it: the recipient's own rule, or for an alias or
    /// a departed account whose every target was refused, the state of the first refused member
    /// (whose reply the recipient got; see [`resolve`]).
    pub fn decision(&self) -> Decision {
        match self.verdict {
            // Only a frozen account defers (and the depth guard, which the loader makes
            // unreachable).
            Verdict::Defer(_) => Decision::DeferFrozen,
            Verdict::Reject(_) => {
                let refusing = match self.rule {
                    Rule::Disabled => Some(State::Disabled),
                    Rule::Deleted => Some(State::Deleted),
                    _ => self.steps.iter().find_map(|s| match s {
                        Step::State { state, .. }
                            if matches!(state, State::Disabled | State::Deleted) =>
                        {
                            Some(*state)
                        }
                        _ => None,
                    }),
                };
                match refusing {
                    Some(State::Disabled) => Decision::RejectDisabled,
                    _ => Decision::RejectDeleted,
                }
            }
            Verdict::Deliver => match self.rule {
                Rule::Alias => Decision::Alias,
                Rule::Departed if self.rewritten() => Decision::Forward,
                _ => Decision::Deliver,
            },
        }
    }

    /// Whether the original recipient stays in the envelope.
    pub fn keeps_original(&self) -> bool {
        self.deliver.contains(&self.recipient)
    }
}

/// Whether an envelope sender may send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum SenderVerdict {
    Allow,
    Block {
        account: Address,
        state: State,
        reply: SmtpReply,
    },
}

/// Decides what happens to mail for `recipient` on `today`.
pub fn resolve(policy: &Policy, recipient: &Address, today: Date) -> Resolution {
    // Sized for the common case (a departed account with a forward or two: about a dozen steps)
    // so that most resolutions allocate each list once instead of growing it step by step; 12
    // steps of 80 bytes also stay within glibc's per-thread cache of small blocks (1032 bytes).
    let mut cx = Cx {
        policy,
        today,
        rule: Rule::Unlisted,
        deliver: Vec::with_capacity(4),
        autoreplies: Vec::new(),
        steps: Vec::with_capacity(12),
        refused: Vec::new(),
    };
    let top = cx.visit(recipient, 0);
    let Cx {
        rule,
        deliver,
        autoreplies,
        mut steps,
        refused,
        ..
    } = cx;
    let verdict = match top {
        Visit::Refused(reply) => refusal(reply),
        Visit::Expanded => match (refused.iter().find(|r| r.code() < 500), refused.first()) {
            (Some(deferred), _) => Verdict::Defer(deferred.clone()),
            (None, Some(rejected)) if deliver.is_empty() => Verdict::Reject(rejected.clone()),
            _ => Verdict::Deliver,
        },
    };
    let (deliver, autoreplies) = match verdict {
        Verdict::Deliver => {
            steps.extend(deliver.iter().map(|a| Step::Deliver { address: a.clone() }));
            (deliver, autoreplies)
        }
        // Nothing is delivered, so nobody is told the account left.
        _ => (Vec::new(), Vec::new()),
    };
    Resolution {
        recipient: recipient.clone(),
        verdict,
        rule,
        deliver,
        autoreplies,
        steps,
    }
}

/// Decides whether `sender` may send on `today`: disabled, frozen and deleted accounts may not.
pub fn check_sender(policy: &Policy, sender: Option<&Address>, today: Date) -> SenderVerdict {
    let Some(sender) = sender else {
        return SenderVerdict::Allow;
    };
    let Some(account) = policy.account(sender) else {
        return SenderVerdict::Allow;
    };
    let state = account.state_on(today);
    if state.may_send() {
        return SenderVerdict::Allow;
    }
    // RFC 3463 X.7.1: delivery not authorized. A frozen account is refused permanently too: the
    // sending client is a person or program that must stop, not a queue that should retry.
    let reply = SmtpReply::new(
        550,
        "5.7.1",
        format!("<{sender}>: account {state}, sending is not allowed"),
    );
    SenderVerdict::Block {
        account: account.address.clone(),
        state,
        reply,
    }
}

fn refusal(reply: SmtpReply) -> Verdict {
    if reply.code() >= 500 {
        Verdict::Reject(reply)
    } else {
        Verdict::Defer(reply)
    }
}

enum Visit {
    /// The node refused the mail itself.
    Refused(SmtpReply),
    /// The node delivered or expanded.
    Expanded,
}

struct Cx<'p> {
    policy: &'p Policy,
    today: Date,
    /// The kind of the recipient's own entry.
    rule: Rule,
    deliver: Vec<Address>,
    autoreplies: Vec<AutoReplyPlan>,
    steps: Vec<Step>,
    /// Replies of members dropped inside an expansion, in order.
    refused: Vec<SmtpReply>,
}

impl Cx<'_> {
    fn visit(&mut self, addr: &Address, depth: usize) -> Visit {
        if depth > MAX_DEPTH {
            // The loader refuses deeper chains, so this is a bug; defer rather than guess.
            let reply = SmtpReply::new(
                451,
                "4.3.0",
                format!("<{addr}>: alias expansion too deep, try again later"),
            );
            return Visit::Refused(reply);
        }
        if !self.policy.is_local(addr.domain()) {
            self.classify(depth, Rule::NotLocal);
            self.steps.push(Step::NotLocal {
                address: addr.clone(),
            });
            self.push_delivery(addr);
            return Visit::Expanded;
        }
        let Some(hit) = self.policy.lookup(addr) else {
            self.classify(depth, Rule::Unlisted);
            self.steps.push(Step::Unlisted {
                address: addr.clone(),
            });
            self.push_delivery(addr);
            return Visit::Expanded;
        };
        if hit.via_detail {
            self.steps.push(Step::Detail {
                address: addr.clone(),
                base: hit.key.clone(),
            });
        }
        match hit.node {
            Node::Alias(i) => {
                let alias = &self.policy.aliases[i];
                self.classify(depth, Rule::Alias);
                self.steps.push(Step::Alias {
                    address: alias.address.clone(),
                    members: alias.members.clone(),
                });
                for m in &alias.members {
                    self.visit_member(m, depth + 1);
                }
                Visit::Expanded
            }
            Node::Account(i) => {
                let account = &self.policy.accounts[i];
                let state = account.state_on(self.today);
                self.classify(depth, Rule::of(state));
                self.steps.push(Step::State {
                    address: account.address.clone(),
                    state,
                    configured: account.state,
                    until: account.until.filter(|_| state != account.state),
                });
                match state {
                    State::Active => {
                        self.push_delivery(addr);
                        Visit::Expanded
                    }
                    State::Departed => {
                        if account.keep_copy {
                            self.steps.push(Step::KeepCopy {
                                address: addr.clone(),
                            });
                            self.push_delivery(addr);
                        } else {
                            self.steps.push(Step::NoCopy {
                                address: addr.clone(),
                            });
                        }
                        for f in &account.forward {
                            self.steps.push(Step::Forward {
                                from: account.address.clone(),
                                to: f.clone(),
                            });
                            self.visit_member(f, depth + 1);
                        }
                        if let Some(t) = &account.autoreply
                            && !self
                                .autoreplies
                                .iter()
                                .any(|p| p.account == account.address)
                        {
                            self.steps.push(Step::AutoReply {
                                account: account.address.clone(),
                                template: t.clone(),
                            });
                            self.autoreplies.push(AutoReplyPlan {
                                account: account.address.clone(),
                                template: t.clone(),
                            });
                        }
                        Visit::Expanded
                    }
                    State::Disabled | State::Frozen | State::Deleted => {
                        let reply = account
                            .reply
                            .clone()
                            .unwrap_or_else(|| default_reply(state, addr));
                        self.steps.push(Step::Refuse {
                            address: addr.clone(),
                            reply: reply.clone(),
                        });
                        Visit::Refused(reply)
                    }
                }
            }
        }
    }

    fn classify(&mut self, depth: usize, rule: Rule) {
        if depth == 0 {
            self.rule = rule;
        }
    }

    fn visit_member(&mut self, addr: &Address, depth: usize) {
        if let Visit::Refused(reply) = self.visit(addr, depth) {
            self.steps.push(Step::Dropped {
                address: addr.clone(),
                reply: reply.clone(),
            });
            self.refused.push(reply);
        }
    }

    fn push_delivery(&mut self, addr: &Address) {
        if !self.deliver.contains(addr) {
            self.deliver.push(addr.clone());
        }
    }
}

/// The replies the issue of each state defines, when the policy gives none.
fn default_reply(state: State, addr: &Address) -> SmtpReply {
    let (code, enhanced, what) = match state {
        // RFC 3463: X.2.1 mailbox disabled, X.1.1 bad destination mailbox address.
        State::Disabled => (550, "5.2.1", "mailbox disabled"),
        State::Frozen => (450, "4.2.1", "mailbox temporarily unavailable"),
        _ => (550, "5.1.1", "user unknown"),
    };
    // `<addr>: what`, assembled directly rather than with format!: this runs for every refused
    // recipient, and the formatting machinery was a fifth of the cost of a refusal.
    let mut text = String::with_capacity(addr.as_str().len() + what.len() + 4);
    text.push('<');
    text.push_str(addr.as_str());
    text.push_str(">: ");
    text.push_str(what);
    SmtpReply::new(code, enhanced, text)
}
