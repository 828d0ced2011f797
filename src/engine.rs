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

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use jiff::civil::Date;
use serde::{Serialize, Serializer};

use crate::address::Address;
use crate::policy::{Account, Alias, Hit, MAX_DEPTH, Node, Policy, SmtpReply, State};

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
    /// Every rule (the label set of the rule-hit metric, registered at start-up).
    pub const ALL: [Rule; 8] = [
        Rule::NotLocal,
        Rule::Unlisted,
        Rule::Active,
        Rule::Alias,
        Rule::Departed,
        Rule::Disabled,
        Rule::Frozen,
        Rule::Deleted,
    ];

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
    /// A recipient in the SRS domain with a forged, expired or malformed SRS address
    /// ([`crate::srs`]).
    RejectSrs,
}

impl Decision {
    pub const ALL: [Decision; 8] = [
        Decision::Deliver,
        Decision::Forward,
        Decision::Alias,
        Decision::RejectDisabled,
        Decision::RejectDeleted,
        Decision::DeferFrozen,
        Decision::BlockSender,
        Decision::RejectSrs,
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
            Decision::RejectSrs => "reject_srs",
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

/// A list shared by every resolution that reaches the same expansion (its steps, deliveries and
/// auto-replies): a part of the one [`Expansion`] they all hold, so that a clone costs a
/// reference count on a cache line the resolution touched already, not a copy. A list built for
/// one resolution alone is its own (an empty one allocates nothing).
#[derive(Clone)]
pub struct Shared<T: 'static>(Repr<T>);

#[derive(Clone)]
enum Repr<T: 'static> {
    Owned(Vec<T>),
    Part(Arc<Expansion>, fn(&Expansion) -> &[T]),
}

impl<T> Shared<T> {
    fn part(expansion: &Arc<Expansion>, part: fn(&Expansion) -> &[T]) -> Shared<T> {
        Shared(Repr::Part(Arc::clone(expansion), part))
    }
}

impl<T> Default for Shared<T> {
    fn default() -> Shared<T> {
        Shared(Repr::Owned(Vec::new()))
    }
}

impl<T> std::ops::Deref for Shared<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        match &self.0 {
            Repr::Owned(v) => v,
            Repr::Part(e, part) => part(e),
        }
    }
}

impl<T> From<Vec<T>> for Shared<T> {
    fn from(v: Vec<T>) -> Shared<T> {
        Shared(Repr::Owned(v))
    }
}

impl<'a, T> IntoIterator for &'a Shared<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;

    fn into_iter(self) -> std::slice::Iter<'a, T> {
        self.iter()
    }
}

impl<T: fmt::Debug> fmt::Debug for Shared<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<T: PartialEq> PartialEq for Shared<T> {
    fn eq(&self, other: &Shared<T>) -> bool {
        **self == **other
    }
}

impl<T: Eq> Eq for Shared<T> {}

impl<T: Serialize> Serialize for Shared<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

/// A list of addresses of a resolution (its deliveries, the accounts it consulted, the forms it
/// was reached through), unique, in order: one of the recipient's own first (its own copy, its
/// own account, the address it matched through its `+detail`), then the shared expansion's.
#[derive(Clone, Default)]
pub struct Addresses {
    first: Option<Address>,
    rest: Shared<Address>,
}

/// An iterator over [`Addresses`].
pub type AddressesIter<'a> =
    std::iter::Chain<std::option::Iter<'a, Address>, std::slice::Iter<'a, Address>>;

impl Addresses {
    /// Delivery to `address` alone.
    pub fn one(address: Address) -> Addresses {
        Addresses {
            first: Some(address),
            rest: Shared::default(),
        }
    }

    pub fn iter(&self) -> AddressesIter<'_> {
        self.first.iter().chain(self.rest.iter())
    }

    pub fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains(&self, address: &Address) -> bool {
        self.iter().any(|a| a == address)
    }
}

/// A list walked for one resolution; one address (the common case) is kept without a shared
/// allocation.
impl From<Vec<Address>> for Addresses {
    fn from(mut v: Vec<Address>) -> Addresses {
        match v.len() {
            1 => Addresses::one(v.pop().expect("one element")),
            _ => Addresses {
                first: None,
                rest: v.into(),
            },
        }
    }
}

/// The recipient's own address of a kind, if it has one.
impl From<Option<Address>> for Addresses {
    fn from(first: Option<Address>) -> Addresses {
        Addresses {
            first,
            rest: Shared::default(),
        }
    }
}

impl<'a> IntoIterator for &'a Addresses {
    type Item = &'a Address;
    type IntoIter = AddressesIter<'a>;

    fn into_iter(self) -> AddressesIter<'a> {
        self.iter()
    }
}

impl fmt::Debug for Addresses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl PartialEq for Addresses {
    fn eq(&self, other: &Addresses) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Addresses {}

impl Serialize for Addresses {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

/// The steps of a resolution, in order: the recipient's own, then runs shared by every
/// resolution that reaches the same alias or departed account on a date its expansion holds for
/// (see [`ExpansionCache`]): the account's state and copy, the expansion, and the deliveries
/// (the recipient's own copy first), then the steps added later.
#[derive(Debug, Clone, Default)]
pub struct Steps {
    head: Vec<Step>,
    own: Shared<Step>,
    shared: Shared<Step>,
    own_delivery: Option<Step>,
    deliveries: Shared<Step>,
    tail: Vec<Step>,
}

type Run<'a> = std::slice::Iter<'a, Step>;

/// An iterator over [`Steps`].
pub type StepsIter<'a> = std::iter::Chain<
    std::iter::Chain<
        std::iter::Chain<
            std::iter::Chain<std::iter::Chain<Run<'a>, Run<'a>>, Run<'a>>,
            std::option::Iter<'a, Step>,
        >,
        Run<'a>,
    >,
    Run<'a>,
>;

impl Steps {
    pub fn iter(&self) -> StepsIter<'_> {
        self.head
            .iter()
            .chain(self.own.iter())
            .chain(self.shared.iter())
            .chain(self.own_delivery.iter())
            .chain(self.deliveries.iter())
            .chain(&self.tail)
    }

    /// Appends a step after all the others.
    pub fn push(&mut self, step: Step) {
        self.tail.push(step);
    }

    pub fn len(&self) -> usize {
        self.head.len()
            + self.own.len()
            + self.shared.len()
            + usize::from(self.own_delivery.is_some())
            + self.deliveries.len()
            + self.tail.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<'a> IntoIterator for &'a Steps {
    type Item = &'a Step;
    type IntoIter = StepsIter<'a>;

    fn into_iter(self) -> StepsIter<'a> {
        self.iter()
    }
}

impl PartialEq for Steps {
    fn eq(&self, other: &Steps) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Steps {}

impl Serialize for Steps {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

/// The decision for one recipient: its facts, which the transaction, the journal and the
/// auto-reply component read, and its [`Steps`], which only describe them (for `explain` and the
/// log). Rewording or reordering the steps cannot change a journal record or an auto-reply.
///
/// The facts left out of the JSON form (`explain --json`) are the ones its steps already show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resolution {
    pub recipient: Address,
    pub verdict: Verdict,
    pub rule: Rule,
    /// Final envelope recipients, de-duplicated, in order; empty unless the verdict is Deliver.
    pub deliver: Addresses,
    pub autoreplies: Shared<AutoReplyPlan>,
    /// Every account whose state the decision read, unique, in order: the recipient's own
    /// first, then those its alias or forwards reached (refused ones too). The journal records
    /// them.
    #[serde(skip)]
    pub accounts: Addresses,
    /// The departed accounts whose `forward` lists the decision followed, unique, in order: a
    /// message forwarded for them carries their loop marker.
    #[serde(skip)]
    pub forwarders: Shared<Address>,
    /// The forms the recipient was reached through besides its own address, unique, in order:
    /// the address it matched through its `+detail`, every alias expanded, and every member or
    /// forward target that matched through its `+detail`. A message addressed to any of them
    /// was addressed to the accounts reached (the auto-reply rules, RFC 3834 section 2).
    #[serde(skip)]
    pub forms: Addresses,
    /// The state of the account whose reply refused the recipient (its own, or for an alias or
    /// a departed account, the first member refused); `None` when delivered, or refused by the
    /// depth guard.
    #[serde(skip)]
    pub refused_by: Option<State>,
    pub steps: Steps,
}

impl Resolution {
    /// Whether the envelope changes: the recipient is not simply delivered as addressed.
    pub fn rewritten(&self) -> bool {
        let mut targets = self.deliver.iter();
        !(targets.next() == Some(&self.recipient) && targets.next().is_none())
    }

    /// The decision, by the state that decided it: the recipient's own rule, or for an alias or
    /// a departed account whose every target was refused, the state of the first refused member
    /// (whose reply the recipient got; see [`resolve`]).
    pub fn decision(&self) -> Decision {
        match self.verdict {
            // Only a frozen account defers (and the depth guard, which the loader makes
            // unreachable).
            Verdict::Defer(_) => Decision::DeferFrozen,
            // The loader gives disabled and deleted accounts 5xx replies only, frozen ones 4xx.
            Verdict::Reject(_) => match self.refused_by {
                Some(State::Disabled) => Decision::RejectDisabled,
                _ => Decision::RejectDeleted,
            },
            Verdict::Deliver => match self.rule {
                Rule::Alias => Decision::Alias,
                Rule::Departed if self.rewritten() => Decision::Forward,
                _ => Decision::Deliver,
            },
        }
    }

    /// Delivery of mail for `recipient` to `target` alone, decided outside the policy's
    /// accounts: a bounce to an SRS address goes to the sender the address stands for
    /// ([`crate::srs`]). No account is involved and no auto-reply follows (a bounce is no
    /// reason to reply, RFC 3834 section 2).
    pub fn redirected(recipient: &Address, target: Address) -> Resolution {
        let own = Step::NotLocal {
            address: recipient.clone(),
        };
        let mut r = as_addressed(recipient, Rule::NotLocal, None, None, [own]);
        r.deliver = Addresses::one(target.clone());
        if let Some(Step::Deliver { address }) = r.steps.head.last_mut() {
            *address = target;
        }
        r
    }

    /// Whether the original recipient stays in the envelope.
    pub fn keeps_original(&self) -> bool {
        self.deliver.contains(&self.recipient)
    }

    /// The departed account the recipient names, if it names one (the first of
    /// [`Resolution::accounts`] is the recipient's own).
    pub fn departed_account(&self) -> Option<&Address> {
        match self.rule {
            Rule::Departed => self.accounts.iter().next(),
            _ => None,
        }
    }

    /// The message already carries the loop marker of the departed account the recipient
    /// names: it stays in that account's mailbox and is not forwarded again.
    pub fn keep_loop_marked(&mut self) {
        let Some(account) = self.departed_account().cloned() else {
            return;
        };
        self.steps.push(Step::LoopMarked { account });
        self.deliver = Addresses::one(self.recipient.clone());
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

/// Decides what happens to mail for `recipient` on `today`, walking what lies below an alias or
/// a departed account afresh: for one-off answers (`explain`, tools). The mail path resolves
/// through its snapshot, which keeps the expansions ([`crate::transaction::Snapshot::resolve`]).
pub fn resolve(policy: &Policy, recipient: &Address, today: Date) -> Resolution {
    decide(policy, None, recipient, today)
}

/// [`resolve`] with the expansions kept in `cache`, which must have been made for `policy`.
pub(crate) fn resolve_cached(
    policy: &Policy,
    cache: &ExpansionCache,
    recipient: &Address,
    today: Date,
) -> Resolution {
    decide(policy, Some(cache), recipient, today)
}

fn decide(
    policy: &Policy,
    cache: Option<&ExpansionCache>,
    recipient: &Address,
    today: Date,
) -> Resolution {
    // The recipient's own node is decided here; what lies below an alias or a departed account
    // comes from the node's shared expansion (see [`ExpansionCache`]). The steps and facts are
    // the ones a walk of the policy (`Cx::visit`) gathers, which the tests check.
    if !policy.is_local(recipient.domain()) {
        let own = Step::NotLocal {
            address: recipient.clone(),
        };
        return as_addressed(recipient, Rule::NotLocal, None, None, [own]);
    }
    let Some(hit) = policy.lookup(recipient) else {
        let own = Step::Unlisted {
            address: recipient.clone(),
        };
        return as_addressed(recipient, Rule::Unlisted, None, None, [own]);
    };
    // The address the recipient matched through its `+detail`: the first of its forms.
    let form = hit.via_detail.then(|| recipient.clone());
    // Left unallocated for the common departed and alias cases, which add no step of their own.
    let mut head = Vec::new();
    if hit.via_detail {
        head.push(Step::Detail {
            address: recipient.clone(),
            base: hit.key.clone(),
        });
    }
    let account = match hit.node {
        Node::Alias(_) => {
            let expansion = expansion(policy, cache, hit.node, today);
            return resolve_expanding(recipient, &hit, None, &expansion, head, form);
        }
        Node::Account(i) => &policy.accounts[i],
    };
    let state = account.state_on(today);
    if state == State::Departed {
        let expansion = expansion(policy, cache, hit.node, today);
        return resolve_expanding(recipient, &hit, Some(account), &expansion, head, form);
    }
    let own_account = Some(account.address.clone());
    if state == State::Active {
        let own = state_step(account, state);
        return match head.pop() {
            // A `+detail` match: its step first.
            Some(detail) => as_addressed(recipient, Rule::Active, own_account, form, [detail, own]),
            None => as_addressed(recipient, Rule::Active, own_account, form, [own]),
        };
    }
    // Disabled, frozen or deleted.
    let reply = account_reply(account, state, recipient);
    head.reserve_exact(2);
    head.push(state_step(account, state));
    head.push(Step::Refuse {
        address: recipient.clone(),
        reply: reply.clone(),
    });
    Resolution {
        recipient: recipient.clone(),
        verdict: refusal(reply),
        rule: Rule::of(state),
        deliver: Addresses::default(),
        autoreplies: Shared::default(),
        accounts: Addresses::from(own_account),
        forwarders: Shared::default(),
        forms: Addresses::from(form),
        refused_by: Some(state),
        steps: Steps {
            head,
            ..Steps::default()
        },
    }
}

/// Delivery to the recipient as addressed, after its own steps (one allocation for all):
/// `account`, the active account it names; `form`, the address it matched through its
/// `+detail`.
fn as_addressed<const N: usize>(
    recipient: &Address,
    rule: Rule,
    account: Option<Address>,
    form: Option<Address>,
    own: [Step; N],
) -> Resolution {
    let mut steps = Vec::with_capacity(N + 1);
    steps.extend(own);
    steps.push(Step::Deliver {
        address: recipient.clone(),
    });
    Resolution {
        recipient: recipient.clone(),
        verdict: Verdict::Deliver,
        rule,
        deliver: Addresses::one(recipient.clone()),
        autoreplies: Shared::default(),
        accounts: Addresses::from(account),
        forwarders: Shared::default(),
        forms: Addresses::from(form),
        refused_by: None,
        steps: Steps {
            head: steps,
            ..Steps::default()
        },
    }
}

/// [`resolve`] by walking the policy from the recipient's node down, `visit` being the first
/// step of the walk: what the shared expansions must equal.
#[cfg(test)]
fn walk(
    policy: &Policy,
    recipient: &Address,
    today: Date,
    visit: impl FnOnce(&mut Cx) -> Visit,
) -> Resolution {
    let mut cx = Cx::new(policy, today);
    let top = visit(&mut cx);
    let Cx {
        rule,
        deliver,
        autoreplies,
        mut steps,
        refused,
        accounts,
        forwarders,
        forms,
        ..
    } = cx;
    let (verdict, refused_by) = verdict(top, &refused, deliver.is_empty());
    let (deliver, autoreplies) = match verdict {
        Verdict::Deliver => {
            steps.extend(deliver.iter().map(|a| Step::Deliver { address: a.clone() }));
            (deliver.into(), autoreplies.into())
        }
        // Nothing is delivered, so nobody is told the account left.
        _ => (Addresses::default(), Shared::default()),
    };
    Resolution {
        recipient: recipient.clone(),
        verdict,
        rule,
        deliver,
        autoreplies,
        accounts: accounts.into(),
        forwarders: forwarders.into(),
        forms: forms.into(),
        refused_by,
        steps: Steps {
            head: steps,
            ..Steps::default()
        },
    }
}

/// [`resolve`] for a recipient whose entry is an alias or an account departed on `today`: the
/// recipient's own steps (`head`, then the account's) around the node's shared expansion.
///
/// The resolution is the one [`Cx::visit`] would build: the same steps in the same order, and
/// the deliveries de-duplicated the same way (the expansion's are already unique, and only the
/// recipient's own copy, first in line, can repeat one of them).
fn resolve_expanding(
    recipient: &Address,
    hit: &Hit,
    account: Option<&Account>,
    expansion: &Arc<Expansion>,
    mut head: Vec<Step>,
    form: Option<Address>,
) -> Resolution {
    let (rule, own_copy, own_steps) = match account {
        None => (Rule::Alias, None, Shared::default()),
        Some(account) => {
            let own_copy = account.keep_copy.then_some(recipient);
            // The account's own steps name the address as written: the shared ones fit unless
            // it came with a `+detail`.
            if hit.via_detail {
                head.push(state_step(account, State::Departed));
                head.push(copy_step(account, recipient));
                (Rule::Departed, own_copy, Shared::default())
            } else {
                (
                    Rule::Departed,
                    own_copy,
                    Shared::part(expansion, |e| &e.own),
                )
            }
        }
    };
    let mut steps = Steps {
        head,
        own: own_steps,
        shared: Shared::part(expansion, |e| &e.steps),
        ..Steps::default()
    };
    // Whether the deliveries are the expansion's, after the account's own copy if it keeps one.
    let (deliver, shares_deliveries) = match own_copy {
        None => (
            Addresses {
                first: None,
                rest: Shared::part(expansion, |e| &e.deliver),
            },
            true,
        ),
        Some(own) if !expansion.deliver.contains(own) => (
            Addresses {
                first: Some(own.clone()),
                rest: Shared::part(expansion, |e| &e.deliver),
            },
            true,
        ),
        // The account's own copy also came back through its forwards: delivered once, first.
        Some(own) => {
            let mut v = Vec::with_capacity(expansion.deliver.len());
            v.push(own.clone());
            v.extend(expansion.deliver.iter().filter(|a| *a != own).cloned());
            (Addresses::from(v), false)
        }
    };
    let (verdict, refused_by) = verdict(Visit::Expanded, &expansion.refused, deliver.is_empty());
    let (deliver, autoreplies) = match verdict {
        Verdict::Deliver => {
            if shares_deliveries {
                steps.own_delivery = deliver
                    .first
                    .clone()
                    .map(|address| Step::Deliver { address });
                steps.deliveries = Shared::part(expansion, |e| &e.deliveries);
            } else {
                steps.tail = deliver
                    .iter()
                    .map(|a| Step::Deliver { address: a.clone() })
                    .collect();
            }
            (deliver, Shared::part(expansion, |e| &e.autoreplies))
        }
        _ => (Addresses::default(), Shared::default()),
    };
    Resolution {
        recipient: recipient.clone(),
        verdict,
        rule,
        deliver,
        autoreplies,
        // A departed account first, then the accounts its forwards reached.
        accounts: Addresses {
            first: account.map(|a| a.address.clone()),
            rest: Shared::part(expansion, |e| &e.accounts),
        },
        forwarders: Shared::part(expansion, |e| &e.forwarders),
        forms: Addresses {
            first: form,
            rest: Shared::part(expansion, |e| &e.forms),
        },
        refused_by,
        steps,
    }
}

/// The expansion below an alias or departed account on `today`: from `cache` when the cached
/// one holds on that date, else walked (and cached).
fn expansion(
    policy: &Policy,
    cache: Option<&ExpansionCache>,
    node: Node,
    today: Date,
) -> Arc<Expansion> {
    let slot = cache.and_then(|c| c.slots.get(policy.node_id(node)));
    if let Some(slot) = slot {
        let cached = slot.load();
        if let Some(e) = &*cached
            && e.holds_on(today)
        {
            return Arc::clone(e);
        }
    }
    let mut cx = Cx::new(policy, today);
    let own = match node {
        Node::Alias(i) => {
            cx.expand_alias(&policy.aliases[i], 0);
            Box::default()
        }
        Node::Account(i) => {
            let account = &policy.accounts[i];
            cx.expand_departed(account, 0);
            Box::from([
                state_step(account, State::Departed),
                copy_step(account, &account.address),
            ])
        }
    };
    let deliveries = cx
        .deliver
        .iter()
        .map(|a| Step::Deliver { address: a.clone() })
        .collect();
    let e = Arc::new(Expansion {
        from: cx.from,
        until: cx.until,
        own,
        steps: cx.steps.into(),
        deliver: cx.deliver.into(),
        deliveries,
        autoreplies: cx.autoreplies.into(),
        accounts: cx.accounts.into(),
        forwarders: cx.forwarders.into(),
        forms: cx.forms.into(),
        refused: cx.refused,
    });
    if let Some(slot) = slot {
        // Two threads may walk the same node at once; both store the same thing.
        slot.store(Some(Arc::clone(&e)));
    }
    e
}

/// For one loaded policy, the expansion of each alias and departed account (see [`Expansion`]),
/// one slot per node, filled when mail first reaches the node. A slot holds the expansion for one
/// span of dates, which is replaced when mail arrives on a date outside it (at midnight, when an
/// `until` passes): the entries stay as many as the nodes mail reached.
///
/// The engine owns the contents; the policy knows nothing of it (the policy is what the admin
/// wrote, compiled). [`crate::transaction::Snapshot`] holds the cache beside the policy it was
/// made for, so a reload, which makes a new snapshot, starts an empty one.
pub(crate) struct ExpansionCache {
    slots: Box<[ArcSwapOption<Expansion>]>,
}

impl ExpansionCache {
    /// An empty cache for `policy`.
    pub(crate) fn new(policy: &Policy) -> ExpansionCache {
        let nodes = policy.accounts.len() + policy.aliases.len();
        ExpansionCache {
            slots: (0..nodes).map(|_| ArcSwapOption::empty()).collect(),
        }
    }
}

impl fmt::Debug for ExpansionCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExpansionCache")
            .field("nodes", &self.slots.len())
            .finish_non_exhaustive()
    }
}

/// What an alias expands to (its `Alias` step and everything below), or a departed account
/// (everything after its `KeepCopy`/`NoCopy` step): the part of a resolution that does not
/// depend on how the recipient was written. It depends on the date only through the `until`
/// switches of the accounts reached, so it holds from `from` (inclusive) to `until`
/// (exclusive), the nearest switches on either side of the date it was walked for.
pub(crate) struct Expansion {
    from: Option<Date>,
    until: Option<Date>,
    /// A departed account's `State` and `KeepCopy`/`NoCopy` steps, for mail addressed to it as
    /// the policy writes it; empty for an alias.
    own: Box<[Step]>,
    steps: Box<[Step]>,
    /// Unique, in order.
    deliver: Box<[Address]>,
    /// A `Deliver` step for each of `deliver`.
    deliveries: Box<[Step]>,
    autoreplies: Box<[AutoReplyPlan]>,
    /// Unique, in order: the accounts reached, the departed ones forwarded for, and the aliases
    /// and `+detail` addresses matched (see [`Resolution`]).
    accounts: Box<[Address]>,
    forwarders: Box<[Address]>,
    forms: Box<[Address]>,
    refused: Vec<Refused>,
}

impl Expansion {
    fn holds_on(&self, today: Date) -> bool {
        self.from.is_none_or(|from| today >= from) && self.until.is_none_or(|until| today < until)
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

/// The verdict for a recipient whose own node gave `top`, after the members in `refused` were
/// dropped from its expansion, and the state of the account whose reply refused it.
fn verdict(top: Visit, refused: &[Refused], nothing_delivered: bool) -> (Verdict, Option<State>) {
    let refused_by = |r: &Refused, verdict| (verdict, r.state);
    match top {
        Visit::Refused(r) => refused_by(&r, refusal(r.reply.clone())),
        Visit::Expanded => match (
            refused.iter().find(|r| r.reply.code() < 500),
            refused.first(),
        ) {
            (Some(deferred), _) => refused_by(deferred, Verdict::Defer(deferred.reply.clone())),
            (None, Some(rejected)) if nothing_delivered => {
                refused_by(rejected, Verdict::Reject(rejected.reply.clone()))
            }
            _ => (Verdict::Deliver, None),
        },
    }
}

/// A refusal: the reply, and the state of the account that gave it (none for the depth guard).
#[derive(Clone)]
struct Refused {
    reply: SmtpReply,
    state: Option<State>,
}

fn state_step(account: &Account, state: State) -> Step {
    Step::State {
        address: account.address.clone(),
        state,
        configured: account.state,
        until: account.until.filter(|_| state != account.state),
    }
}

/// Whether a departed account's mailbox keeps a copy, naming the address as written.
fn copy_step(account: &Account, addr: &Address) -> Step {
    let address = addr.clone();
    match account.keep_copy {
        true => Step::KeepCopy { address },
        false => Step::NoCopy { address },
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
    Refused(Refused),
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
    /// The facts of [`Resolution`] of the same names, unique, in order.
    accounts: Vec<Address>,
    forwarders: Vec<Address>,
    forms: Vec<Address>,
    /// Members dropped inside an expansion, in order.
    refused: Vec<Refused>,
    /// The dates the walk's outcome holds for (see [`Expansion`]).
    from: Option<Date>,
    until: Option<Date>,
}

impl<'p> Cx<'p> {
    fn new(policy: &'p Policy, today: Date) -> Cx<'p> {
        // Sized for the common case (a departed account with a forward or two: about a dozen
        // steps) so that most walks allocate each list once instead of growing it step by step.
        Cx {
            policy,
            today,
            rule: Rule::Unlisted,
            deliver: Vec::with_capacity(4),
            autoreplies: Vec::new(),
            steps: Vec::with_capacity(12),
            accounts: Vec::with_capacity(4),
            forwarders: Vec::new(),
            forms: Vec::new(),
            refused: Vec::new(),
            from: None,
            until: None,
        }
    }

    fn visit(&mut self, addr: &Address, depth: usize) -> Visit {
        if depth > MAX_DEPTH {
            // The loader refuses deeper chains, so this is a bug; defer rather than guess.
            let reply = SmtpReply::new(
                451,
                "4.3.0",
                format!("<{addr}>: alias expansion too deep, try again later"),
            );
            return Visit::Refused(Refused { reply, state: None });
        }
        if !self.policy.is_local(addr.domain()) {
            self.classify(depth, Rule::NotLocal);
            self.steps.push(Step::NotLocal {
                address: addr.clone(),
            });
            self.push_delivery(addr);
            return Visit::Expanded;
        }
        let hit = self.policy.lookup(addr);
        self.visit_listed(addr, hit, depth)
    }

    /// [`Cx::visit`] for a local address, given what looking it up found.
    fn visit_listed(&mut self, addr: &Address, hit: Option<Hit>, depth: usize) -> Visit {
        let Some(hit) = hit else {
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
                base: hit.key,
            });
            push_unique(&mut self.forms, addr);
        }
        match hit.node {
            Node::Alias(i) => {
                self.classify(depth, Rule::Alias);
                self.expand_alias(&self.policy.aliases[i], depth);
                Visit::Expanded
            }
            Node::Account(i) => {
                let account = &self.policy.accounts[i];
                let state = self.state_on(account);
                self.classify(depth, Rule::of(state));
                self.steps.push(state_step(account, state));
                push_unique(&mut self.accounts, &account.address);
                match state {
                    State::Active => {
                        self.push_delivery(addr);
                        Visit::Expanded
                    }
                    State::Departed => {
                        self.steps.push(copy_step(account, addr));
                        if account.keep_copy {
                            self.push_delivery(addr);
                        }
                        self.expand_departed(account, depth);
                        Visit::Expanded
                    }
                    State::Disabled | State::Frozen | State::Deleted => {
                        let reply = account_reply(account, state, addr);
                        self.steps.push(Step::Refuse {
                            address: addr.clone(),
                            reply: reply.clone(),
                        });
                        Visit::Refused(Refused {
                            reply,
                            state: Some(state),
                        })
                    }
                }
            }
        }
    }

    /// The alias's step and its members' expansions.
    fn expand_alias(&mut self, alias: &Alias, depth: usize) {
        self.steps.push(Step::Alias {
            address: alias.address.clone(),
            members: alias.members.clone(),
        });
        push_unique(&mut self.forms, &alias.address);
        for m in &alias.members {
            self.visit_member(m, depth + 1);
        }
    }

    /// A departed account's forwards and its auto-reply: what follows its own copy.
    fn expand_departed(&mut self, account: &Account, depth: usize) {
        if !account.forward.is_empty() {
            push_unique(&mut self.forwarders, &account.address);
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
    }

    /// The account's state on the walk's date, narrowing the dates the walk holds for to the
    /// side of its `until` that date is on.
    fn state_on(&mut self, account: &Account) -> State {
        if let (Some(until), Some(_)) = (account.until, account.then) {
            if self.today >= until {
                self.from = self.from.max(Some(until));
            } else {
                self.until = Some(self.until.map_or(until, |u| u.min(until)));
            }
        }
        account.state_on(self.today)
    }

    fn classify(&mut self, depth: usize, rule: Rule) {
        if depth == 0 {
            self.rule = rule;
        }
    }

    fn visit_member(&mut self, addr: &Address, depth: usize) {
        if let Visit::Refused(refused) = self.visit(addr, depth) {
            self.steps.push(Step::Dropped {
                address: addr.clone(),
                reply: refused.reply.clone(),
            });
            self.refused.push(refused);
        }
    }

    fn push_delivery(&mut self, addr: &Address) {
        push_unique(&mut self.deliver, addr);
    }
}

fn push_unique(list: &mut Vec<Address>, addr: &Address) {
    if !list.contains(addr) {
        list.push(addr.clone());
    }
}

/// The reply refusing mail for `addr`, whose account is in `state`: the account's own, else
/// the state's default.
fn account_reply(account: &Account, state: State, addr: &Address) -> SmtpReply {
    account
        .reply
        .clone()
        .unwrap_or_else(|| default_reply(state, addr))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Switches at three levels: a member of an alias, a forward target, and the recipient.
    const POLICY: &str = r#"
[domains]
local = ["corp.example"]

[templates.t]
subject = "gone"
body = "gone"

[aliases]
"team@corp.example" = ["leaver@corp.example", "dep@corp.example", "x@partner.example"]
"outer@corp.example" = ["team@corp.example", "dep@corp.example"]

[accounts."leaver@corp.example"]
state = "active"
successor = "boss@corp.example"
until = 2026-03-01
then = "departed"
autoreply = "t"

[accounts."boss@corp.example"]
state = "departed"
successor = "heir@corp.example"
keep_copy = true
until = 2026-06-01
then = "deleted"

[accounts."dep@corp.example"]
state = "departed"
forward = ["boss@corp.example", "leaver+fwd@corp.example"]
keep_copy = true
autoreply = "t"

[accounts."heir@corp.example"]
state = "active"
"#;

    /// The facts of a decision, for an alias written with a `+detail` whose members are a
    /// departed account written with a `+detail` (forwarding to an active one and an alias) and
    /// a disabled account; then an alias whose only member is refused.
    #[test]
    fn facts_of_an_alias_with_detail_forms() {
        let policy = Policy::from_text(
            "p.toml",
            r#"
[domains]
local = ["corp.example"]

[aliases]
"team@corp.example" = ["gone+team@corp.example", "off@corp.example", "x@partner.example"]
"help@corp.example" = ["cs@corp.example", "off@corp.example"]
"dead@corp.example" = ["off@corp.example"]

[accounts."gone@corp.example"]
state = "departed"
successor = "cs@corp.example"
forward = ["cs@corp.example", "help@corp.example"]
keep_copy = false

[accounts."off@corp.example"]
state = "disabled"

[accounts."cs@corp.example"]
state = "active"
"#,
        )
        .unwrap();
        let cache = ExpansionCache::new(&policy);
        let today = jiff::civil::date(2026, 6, 1);
        fn list(a: &Addresses) -> Vec<&str> {
            a.iter().map(Address::as_str).collect()
        }
        let rcpt = Address::parse_strict("team+q@corp.example").unwrap();
        // Twice: the walk that fills the cache, then the cached expansion.
        for _ in 0..2 {
            let r = resolve_cached(&policy, &cache, &rcpt, today);
            assert_eq!(r.decision(), Decision::Alias);
            assert_eq!(
                list(&r.accounts),
                ["gone@corp.example", "cs@corp.example", "off@corp.example"]
            );
            let forwarders: Vec<&str> = r.forwarders.iter().map(Address::as_str).collect();
            assert_eq!(forwarders, ["gone@corp.example"]);
            assert_eq!(
                list(&r.forms),
                [
                    "team+q@corp.example",
                    "team@corp.example",
                    "gone+team@corp.example",
                    "help@corp.example"
                ]
            );
            assert_eq!(r.refused_by, None);
            assert_eq!(r.departed_account(), None);
        }
        let gone = Address::parse_strict("gone+x@corp.example").unwrap();
        let r = resolve_cached(&policy, &cache, &gone, today);
        assert_eq!(
            r.departed_account().map(Address::as_str),
            Some("gone@corp.example")
        );
        assert_eq!(list(&r.forms)[0], "gone+x@corp.example");
        let dead = Address::parse_strict("dead@corp.example").unwrap();
        let r = resolve(&policy, &dead, today);
        assert_eq!(r.refused_by, Some(State::Disabled));
        assert_eq!(r.decision(), Decision::RejectDisabled);
        assert_eq!(list(&r.accounts), ["off@corp.example"]);
    }

    /// The same resolution as a walk of the policy with no shared expansions, on dates that
    /// move back and forth across the switches, so that cached expansions are reused and
    /// replaced; recipients of every kind (alias, departed, active, refused once `boss` is
    /// deleted, unlisted, not local), with and without `+detail`.
    #[test]
    fn shared_expansions_match_a_full_walk() {
        let policy = Policy::from_text("p.toml", POLICY).unwrap();
        let cache = ExpansionCache::new(&policy);
        let recipients = [
            "team@corp.example",
            "outer@corp.example",
            "team+x@corp.example",
            "dep@corp.example",
            "dep+x@corp.example",
            "boss@corp.example",
            "boss+x@corp.example",
            "leaver@corp.example",
            "leaver+x@corp.example",
            "heir@corp.example",
            "Heir+x@corp.example",
            "nobody@corp.example",
            "x@partner.example",
        ];
        let dates = [
            (2026, 1, 1),
            (2026, 3, 1),
            (2026, 2, 28),
            (2026, 6, 1),
            (2026, 5, 31),
            (2027, 1, 1),
            (2026, 1, 1),
        ];
        for (y, m, d) in dates {
            let today = jiff::civil::date(y, m, d);
            for r in recipients {
                let r = Address::parse_strict(r).unwrap();
                let walked = walk(&policy, &r, today, |cx| cx.visit(&r, 0));
                let shared = resolve_cached(&policy, &cache, &r, today);
                assert_eq!(shared, walked, "{r} on {today}");
                assert_eq!(shared.decision(), walked.decision(), "{r} on {today}");
            }
        }
    }
}
