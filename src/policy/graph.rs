//! The account and alias graph: `[domains]`, `[templates]`, `[accounts]` and `[aliases]`, judged
//! and built into the lookup tables the engine reads.
//!
//! Everything that can be wrong with them is found here, before any mail sees it: addresses,
//! states, replies of the wrong class, unknown templates and placeholders, `then` without
//! `until`, forwards to oneself, alias and forward cycles, chains deeper than [`MAX_DEPTH`] or
//! wider than [`MAX_WIDTH`]. Errors are collected, never returned early, so one run of
//! `handoff check` shows them all.

use std::collections::{BTreeMap, HashMap, HashSet};

use jiff::civil::Date;
use toml::Spanned;

use super::diag::{Collector, FileId, Origin, Sources};
use super::raw::{Entry, RawAccount, RawFile, SString};
use super::reply::SmtpReply;
use super::template::{TemplateError, Text};
use super::{Account, Alias, Index, MAX_DEPTH, MAX_WIDTH, Node, OriginalSubject, State, Template};
use crate::address::Address;

pub(super) fn domains(raws: &[RawFile], errs: &mut Collector) -> (Vec<String>, Option<char>) {
    let f = FileId(0);
    let raw = raws[0].domains.as_ref().map(|(_, d)| d);
    let delimiter = match raw.and_then(|d| d.recipient_delimiter.as_ref()) {
        None => Some('+'),
        Some(s) => {
            let mut chars = s.get_ref().chars();
            match (chars.next(), chars.next()) {
                (None, _) => None,
                (Some(c), None) if !c.is_alphanumeric() && c != '@' => Some(c),
                _ => {
                    errs.error(f, s.span().start, format!("`recipient_delimiter` must be one non-alphanumeric character or empty, not `{}`", s.get_ref()));
                    Some('+')
                }
            }
        }
    };
    let mut local = Vec::new();
    match raw.and_then(|d| d.local.as_ref()) {
        Some(list) => {
            for d in list {
                // The lookup form (A-labels), so `公司.中国` and `xn--55qx5d.xn--fiqs8s` are one.
                match crate::address::domain_lookup_form(d.get_ref()) {
                    Some(name) if !local.contains(&name) => local.push(name),
                    Some(_) => {}
                    None => errs.error(
                        f,
                        d.span().start,
                        format!(
                            "`{}` is not a domain name (or not valid IDNA, UTS 46)",
                            d.get_ref()
                        ),
                    ),
                }
            }
        }
        None => {
            // No list given: the domains of the addresses the policy names are the local ones.
            for raw in raws {
                let keys = raw
                    .accounts
                    .iter()
                    .map(|e| &e.key)
                    .chain(raw.aliases.iter().map(|e| &e.key));
                for key in keys {
                    if let Ok(a) = Address::parse_strict(key) {
                        let d = a.domain().to_string();
                        if !local.contains(&d) {
                            local.push(d);
                        }
                    }
                }
            }
        }
    }
    (local, delimiter)
}

/// Builds the graph in three steps (templates, then accounts and aliases, then the checks that
/// need the whole graph), collecting errors as it goes.
pub(super) struct Builder<'s> {
    sources: &'s Sources,
    pub(super) errs: Collector,
    pub(super) accounts: Vec<Account>,
    pub(super) aliases: Vec<Alias>,
    pub(super) templates: BTreeMap<String, Template>,
    template_origins: HashMap<String, Origin>,
    pub(super) index: Index,
    delimiter: Option<char>,
}

impl<'s> Builder<'s> {
    /// An empty graph over `sources`, adding to the errors found so far.
    pub(super) fn new(sources: &'s Sources, errs: Collector, delimiter: Option<char>) -> Self {
        Self {
            sources,
            errs,
            accounts: Vec::new(),
            aliases: Vec::new(),
            templates: BTreeMap::new(),
            template_origins: HashMap::new(),
            index: Index::default(),
            delimiter,
        }
    }

    pub(super) fn templates(&mut self, raws: &mut [RawFile]) {
        for raw in raws.iter_mut() {
            for Entry { key, origin, value } in std::mem::take(&mut raw.templates) {
                if let Some(first) = self.template_origins.get(&key) {
                    let msg = format!(
                        "template `{key}` is defined twice (first at {})",
                        self.sources.describe(first)
                    );
                    self.errs.at(&origin, msg);
                    continue;
                }
                let subject = self.template_text(origin.file, &value.subject, &key, "subject");
                let body = self.template_text(origin.file, &value.body, &key, "body");
                if value.subject.get_ref().contains(['\r', '\n']) {
                    self.errs.error(
                        origin.file,
                        value.subject.span().start,
                        format!("template `{key}`: the subject must be one line"),
                    );
                }
                let from = value
                    .from
                    .as_ref()
                    .and_then(|f| self.address(origin.file, f));
                let original_subject = match &value.original_subject {
                    None => OriginalSubject::default(),
                    Some(s) => OriginalSubject::parse(s.get_ref()).unwrap_or_else(|| {
                        self.errs.error(
                            origin.file,
                            s.span().start,
                            format!(
                                "template `{key}`: original_subject `{}` is not one of {}",
                                s.get_ref(),
                                OriginalSubject::NAMES
                            ),
                        );
                        OriginalSubject::default()
                    }),
                };
                self.template_origins.insert(key.clone(), origin);
                if let (Some(subject), Some(body)) = (subject, body) {
                    self.templates.insert(
                        key.clone(),
                        Template {
                            name: key,
                            subject,
                            body,
                            from,
                            original_subject,
                        },
                    );
                }
            }
        }
    }

    fn template_text(
        &mut self,
        file: FileId,
        s: &SString,
        template: &str,
        field: &str,
    ) -> Option<Text> {
        match Text::parse(s.get_ref()) {
            Ok(t) => Some(t),
            Err(errors) => {
                for e in errors {
                    let at = self.locate_in_string(file, s, &e);
                    self.errs
                        .error(file, at, format!("template `{template}` {field}: {e}"));
                }
                None
            }
        }
    }

    /// Points at the offending placeholder itself when the source spells it the same way as the
    /// parsed string (no escapes in between), else at the start of the string.
    fn locate_in_string(&self, file: FileId, s: &SString, e: &TemplateError) -> usize {
        let span = s.span();
        let src = &self.sources.files[file.0].text;
        let Some(literal) = src.get(span.clone()) else {
            return span.start;
        };
        let value = s.get_ref();
        let needle_end = value[e.offset()..]
            .find('}')
            .map_or(value.len(), |i| e.offset() + i + 1);
        let needle = &value[e.offset()
            ..needle_end
                .min(e.offset() + 40)
                .max(e.offset() + 1)
                .min(value.len())];
        literal.find(needle).map_or(span.start, |i| span.start + i)
    }

    fn address(&mut self, file: FileId, s: &SString) -> Option<Address> {
        match Address::parse_strict(s.get_ref()) {
            Ok(a) => Some(a),
            Err(e) => {
                self.errs
                    .error(file, s.span().start, format!("bad address: {e}"));
                None
            }
        }
    }

    pub(super) fn accounts_and_aliases(&mut self, raws: &mut [RawFile], local: &[String]) {
        let mut origins: HashMap<Address, Origin> = HashMap::new();
        for raw in raws.iter_mut() {
            for entry in std::mem::take(&mut raw.accounts) {
                let origin = entry.origin.clone();
                let Some(address) =
                    self.key_address(&entry.key, &origin, local, &origins, "account")
                else {
                    continue;
                };
                origins.insert(address.clone(), origin);
                if let Some(account) = self.account(address.clone(), entry) {
                    self.index
                        .insert(address, Node::Account(self.accounts.len()));
                    self.accounts.push(account);
                }
            }
        }
        for raw in raws.iter_mut() {
            for Entry { key, origin, value } in std::mem::take(&mut raw.aliases) {
                let Some(address) = self.key_address(&key, &origin, local, &origins, "alias")
                else {
                    continue;
                };
                origins.insert(address.clone(), origin.clone());
                let mut members = Vec::with_capacity(value.len());
                for m in &value {
                    if let Some(a) = self.address(origin.file, m)
                        && !members.contains(&a)
                    {
                        members.push(a);
                    }
                }
                if value.is_empty() {
                    self.errs
                        .at(&origin, format!("alias `{address}` has no members"));
                    continue;
                }
                if !members.is_empty() {
                    self.index
                        .insert(address.clone(), Node::Alias(self.aliases.len()));
                    self.aliases.push(Alias {
                        address,
                        members,
                        origin,
                    });
                }
            }
        }
    }

    /// Checks an account or alias key: a valid address, in a local domain, named once.
    fn key_address(
        &mut self,
        key: &str,
        origin: &Origin,
        local: &[String],
        seen: &HashMap<Address, Origin>,
        what: &str,
    ) -> Option<Address> {
        let address = match Address::parse_strict(key) {
            Ok(a) => a,
            Err(e) => {
                self.errs.at(origin, format!("bad {what} address: {e}"));
                return None;
            }
        };
        if !local.iter().any(|d| d == address.domain()) {
            let msg = format!(
                "{what} `{address}` is not in a local domain ([domains] local = {local:?}); handoff would never see its mail"
            );
            self.errs.at(origin, msg);
            return None;
        }
        if let Some(first) = seen.get(&address) {
            let other = match self.index.get(&address) {
                Some(Node::Account(_)) => "an account",
                _ => "an alias",
            };
            let msg = format!(
                "`{address}` is already {other} at {}",
                self.sources.describe(first)
            );
            self.errs.at(origin, msg);
            return None;
        }
        Some(address)
    }

    fn account(&mut self, address: Address, entry: Entry<RawAccount>) -> Option<Account> {
        let Entry {
            origin, value: raw, ..
        } = entry;
        let file = origin.file;
        let state = self.state(file, &raw.state, "state");
        let then = raw.then.as_ref().and_then(|t| self.state(file, t, "then"));
        let until = raw.until.as_ref().and_then(|u| self.date(file, u));
        match (&raw.until, &raw.then) {
            (None, Some(t)) => self.errs.error(
                file,
                t.span().start,
                "`then` needs `until` (the date from which it applies)",
            ),
            (Some(u), None) => self.errs.error(
                file,
                u.span().start,
                "`until` needs `then` (the state from that date on)",
            ),
            _ => {}
        }
        let state = state?;
        let states: Vec<State> = [Some(state), then].into_iter().flatten().collect();
        let ever_departed = states.contains(&State::Departed);

        let successor = raw.successor.as_ref().and_then(|s| self.address(file, s));
        let mut forward = Vec::new();
        if let Some(list) = &raw.forward {
            for f in list.get_ref() {
                if let Some(a) = self.address(file, f) {
                    if a == address {
                        self.errs.error(
                            file,
                            f.span().start,
                            format!("`{address}` forwards to itself"),
                        );
                    } else if !forward.contains(&a) {
                        forward.push(a);
                    }
                }
            }
        } else if let Some(s) = &successor {
            forward.push(s.clone());
        }
        if let Some(s) = &successor
            && *s == address
        {
            let at = raw
                .successor
                .as_ref()
                .map_or(origin.span.start, |s| s.span().start);
            self.errs
                .error(file, at, format!("`{address}` names itself as successor"));
        }
        let keep_copy = raw.keep_copy.as_ref().is_none_or(|k| *k.get_ref());
        let autoreply = raw.autoreply.as_ref().map(|t| t.get_ref().clone());

        if ever_departed {
            if raw.forward.is_some() && forward.is_empty() && !keep_copy {
                let at = raw
                    .keep_copy
                    .as_ref()
                    .map_or(origin.span.start, |k| k.span().start);
                self.errs.error(file, at, "a departed account with `keep_copy = false` needs somewhere to forward to: mail would go nowhere");
            } else if raw.forward.is_none() && successor.is_none() && !keep_copy {
                let at = raw
                    .keep_copy
                    .as_ref()
                    .map_or(origin.span.start, |k| k.span().start);
                self.errs.error(
                    file,
                    at,
                    "a departed account with `keep_copy = false` needs `successor` or `forward`",
                );
            }
        } else {
            let only_departed: [(&str, Option<usize>); 3] = [
                ("forward", raw.forward.as_ref().map(|f| f.span().start)),
                ("keep_copy", raw.keep_copy.as_ref().map(|k| k.span().start)),
                ("autoreply", raw.autoreply.as_ref().map(|a| a.span().start)),
            ];
            for (name, at) in only_departed {
                if let Some(at) = at {
                    self.errs.error(
                        file,
                        at,
                        format!(
                            "`{name}` has no effect: the account is `{state}` and never `departed`"
                        ),
                    );
                }
            }
        }
        if let Some(t) = &raw.autoreply
            && !self.templates.contains_key(t.get_ref())
            && !self.template_origins.contains_key(t.get_ref())
        {
            let known: Vec<&String> = self.template_origins.keys().collect();
            self.errs.error(
                file,
                t.span().start,
                format!("unknown template `{}` (defined: {known:?})", t.get_ref()),
            );
        }
        let reply = raw
            .reply
            .as_ref()
            .and_then(|r| self.reply(file, r, &states));
        let name = raw
            .name
            .as_ref()
            .map_or_else(|| address.local_part().to_string(), |n| n.get_ref().clone());
        if raw
            .name
            .as_ref()
            .is_some_and(|n| n.get_ref().contains(['\r', '\n']))
        {
            self.errs.at(&origin, "`name` must be one line");
        }
        Some(Account {
            address,
            state,
            name,
            department: raw.department.map(Spanned::into_inner),
            successor,
            forward,
            keep_copy,
            autoreply,
            until,
            then,
            reply,
            origin,
        })
    }

    fn state(&mut self, file: FileId, s: &SString, field: &str) -> Option<State> {
        let st = State::parse(s.get_ref().trim());
        if st.is_none() {
            let known: Vec<&str> = State::ALL.iter().map(|s| s.as_str()).collect();
            let msg = format!(
                "unknown {field} `{}` (expected one of: {})",
                s.get_ref(),
                known.join(", ")
            );
            self.errs.error(file, s.span().start, msg);
        }
        st
    }

    fn date(&mut self, file: FileId, v: &Spanned<toml::Value>) -> Option<Date> {
        let parsed = match v.get_ref() {
            toml::Value::Datetime(dt) if dt.time.is_none() && dt.offset.is_none() => dt
                .date
                .and_then(|d| Date::new(d.year as i16, d.month as i8, d.day as i8).ok()),
            toml::Value::String(s) => s.trim().parse::<Date>().ok(),
            _ => None,
        };
        if parsed.is_none() {
            self.errs.error(
                file,
                v.span().start,
                format!(
                    "`until` must be a date like 2027-05-01, not `{}`",
                    v.get_ref()
                ),
            );
        }
        parsed
    }

    fn reply(&mut self, file: FileId, r: &SString, states: &[State]) -> Option<SmtpReply> {
        let at = r.span().start;
        let reply = match SmtpReply::parse(r.get_ref()) {
            Ok(reply) => reply,
            Err(e) => {
                self.errs.error(file, at, format!("bad reply: {e}"));
                return None;
            }
        };
        let classes: Vec<_> = states
            .iter()
            .filter_map(|s| s.refusal().map(|c| (*s, c)))
            .collect();
        if classes.is_empty() {
            let names: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
            self.errs.error(
                file,
                at,
                format!(
                    "`reply` has no effect: the account is {} and never refuses mail",
                    names.join(" then ")
                ),
            );
            return None;
        }
        for (state, class) in classes {
            if let Err(e) = reply.clone().require(class) {
                self.errs
                    .error(file, at, format!("bad reply for a {state} account: {e}"));
                return None;
            }
        }
        Some(reply)
    }

    /// Alias and forward chains must end, stay within [`MAX_DEPTH`] hops and expand to at most
    /// [`MAX_WIDTH`] addresses. Checked over every edge that can exist on any date (an account's
    /// forwards count if it is ever departed), so a date can never turn a valid policy into a
    /// looping one.
    pub(super) fn check_graph(&mut self) {
        let n_acc = self.accounts.len();
        let total = n_acc + self.aliases.len();
        let id = |node: Node| match node {
            Node::Account(i) => i,
            Node::Alias(i) => n_acc + i,
        };
        let delimiter = self.delimiter;
        let lookup = |index: &Index, a: &Address| -> Option<Node> {
            index.get(a).copied().or_else(|| {
                let base = a.without_detail(delimiter?)?;
                index.get(&base).copied()
            })
        };
        // Edges to other policy nodes, and the count of plain addresses reached directly.
        let mut edges: Vec<Vec<usize>> = vec![Vec::new(); total];
        let mut leaves: Vec<usize> = vec![0; total];
        for (i, acc) in self.accounts.iter().enumerate() {
            // An account delivers to its own mailbox while active, and (with `keep_copy`) while
            // departed: either way its address is one of the expansion's, at most once.
            if delivers_to_self(acc) {
                leaves[i] += 1;
            }
            if !departs(acc) {
                continue;
            }
            for f in &acc.forward {
                match lookup(&self.index, f) {
                    Some(n) if id(n) != i => edges[i].push(id(n)),
                    Some(_) => {}
                    None => leaves[i] += 1,
                }
            }
        }
        for (j, alias) in self.aliases.iter().enumerate() {
            let i = n_acc + j;
            for m in &alias.members {
                match lookup(&self.index, m) {
                    Some(n) => edges[i].push(id(n)),
                    None => leaves[i] += 1,
                }
            }
        }
        let name = |i: usize| -> (&Address, &Origin) {
            if i < n_acc {
                (&self.accounts[i].address, &self.accounts[i].origin)
            } else {
                (
                    &self.aliases[i - n_acc].address,
                    &self.aliases[i - n_acc].origin,
                )
            }
        };

        // Iterative DFS: colour 0 unseen, 1 on the stack, 2 done. `depth[i]` is the longest chain
        // of expansions below i; `width[i]` an upper bound on the addresses it expands to.
        let mut colour = vec![0u8; total];
        let mut depth = vec![0usize; total];
        let mut width = vec![0usize; total];
        let mut reported_cycles: HashSet<Vec<usize>> = HashSet::new();
        let mut cyclic = vec![false; total];
        for root in 0..total {
            if colour[root] != 0 {
                continue;
            }
            let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
            colour[root] = 1;
            while let Some(&mut (node, ref mut next)) = stack.last_mut() {
                if *next < edges[node].len() {
                    let child = edges[node][*next];
                    *next += 1;
                    match colour[child] {
                        0 => {
                            colour[child] = 1;
                            stack.push((child, 0));
                        }
                        1 => {
                            let pos = stack.iter().position(|(n, _)| *n == child).unwrap_or(0);
                            let cycle: Vec<usize> = stack[pos..].iter().map(|(n, _)| *n).collect();
                            for &c in &cycle {
                                cyclic[c] = true;
                            }
                            let mut key = cycle.clone();
                            key.sort_unstable();
                            if reported_cycles.insert(key) {
                                let mut path: Vec<String> =
                                    cycle.iter().map(|&c| name(c).0.to_string()).collect();
                                path.push(name(child).0.to_string());
                                let (_, origin) = name(cycle[0]);
                                self.errs.at(
                                    origin,
                                    format!("alias/forward cycle: {}", path.join(" -> ")),
                                );
                            }
                        }
                        _ => {}
                    }
                } else {
                    stack.pop();
                    colour[node] = 2;
                    let kids = &edges[node];
                    depth[node] = 1 + kids.iter().map(|&k| depth[k]).max().unwrap_or(0);
                    width[node] = kids
                        .iter()
                        .fold(leaves[node], |w, &k| w.saturating_add(width[k]));
                }
            }
        }
        for i in 0..total {
            if cyclic[i] || edges[i].is_empty() && leaves[i] == 0 {
                continue;
            }
            let (address, origin) = name(i);
            if depth[i] > MAX_DEPTH {
                let msg = format!(
                    "`{address}` expands through {} levels of aliases and forwards (at most {MAX_DEPTH})",
                    depth[i]
                );
                self.errs.at(origin, msg);
            } else if width[i] > MAX_WIDTH {
                // The bound counts an address once per path; count exactly before refusing.
                let exact = self.exact_width(i, &edges, n_acc);
                if exact > MAX_WIDTH {
                    let msg =
                        format!("`{address}` expands to {exact} addresses (at most {MAX_WIDTH})");
                    self.errs.at(origin, msg);
                }
            }
        }
    }

    /// The number of distinct addresses node `i` delivers to (acyclic graph, checked depth).
    fn exact_width(&self, root: usize, edges: &[Vec<usize>], n_acc: usize) -> usize {
        let mut out: HashSet<&Address> = HashSet::new();
        let mut stack = vec![root];
        let mut seen = HashSet::new();
        while let Some(i) = stack.pop() {
            if !seen.insert(i) {
                continue;
            }
            stack.extend(edges[i].iter().copied());
            let targets: Vec<&Address> = if i < n_acc {
                let a = &self.accounts[i];
                let own = delivers_to_self(a).then_some(&a.address);
                let forward = if departs(a) { &a.forward[..] } else { &[] };
                own.into_iter().chain(forward).collect()
            } else {
                self.aliases[i - n_acc].members.iter().collect()
            };
            for t in targets {
                let is_node = self.index.contains_key(t)
                    && Some(t) != (i < n_acc).then(|| &self.accounts[i].address);
                if !is_node {
                    out.insert(t);
                }
            }
        }
        out.len()
    }
}

/// Whether the account is departed on some date, so that its forwards can be followed.
fn departs(acc: &Account) -> bool {
    acc.state == State::Departed || acc.then == Some(State::Departed)
}

/// Whether mail reaching the account lands in its own mailbox on some date: while it is active,
/// or while it is departed with `keep_copy`.
fn delivers_to_self(acc: &Account) -> bool {
    acc.state == State::Active || acc.then == Some(State::Active) || departs(acc) && acc.keep_copy
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;

    use crate::policy::test_errors as errors;

    #[test]
    fn original_subject_is_a_template_setting_checked_with_its_line() {
        let p = Policy::from_text(
            "p.toml",
            "[templates.a]\nsubject = \"s\"\nbody = \"b\"\n\
             [templates.b]\nsubject = \"s\"\nbody = \"b\"\noriginal_subject = \"always\"\n\
             [templates.c]\nsubject = \"s\"\nbody = \"b\"\noriginal_subject = \"never\"\n",
        )
        .unwrap();
        assert_eq!(
            p.templates["a"].original_subject,
            OriginalSubject::Authenticated
        );
        assert_eq!(p.templates["b"].original_subject, OriginalSubject::Always);
        assert_eq!(p.templates["c"].original_subject, OriginalSubject::Never);
        let errs = errors(
            "[templates.a]\nsubject = \"s\"\nbody = \"b\"\noriginal_subject = \"yes\"\n\
             [templates.b]\nsubject = \"s\"\nbody = \"b\"\noriginal_subjet = \"never\"\n",
        );
        assert_eq!(errs.len(), 2, "{errs:#?}");
        assert_eq!(
            errs[0],
            "p.toml:4:20: template `a`: original_subject `yes` is not one of always, authenticated, never"
        );
        assert!(
            errs[1].starts_with("p.toml:8:1: unknown field `original_subjet`"),
            "{}",
            errs[1]
        );
    }

    #[test]
    fn cycles_are_printed() {
        let errs = errors(
            r#"
[aliases]
"a@corp.example" = ["b@corp.example"]
"b@corp.example" = ["c@corp.example"]
"c@corp.example" = ["a@corp.example", "x@corp.example"]
"#,
        );
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert!(
            errs[0].contains(
                "cycle: a@corp.example -> b@corp.example -> c@corp.example -> a@corp.example"
            ),
            "{}",
            errs[0]
        );
        assert!(errs[0].starts_with("p.toml:3:1:"), "{}", errs[0]);
    }

    #[test]
    fn forward_cycles_through_departed_accounts_are_found() {
        let errs = errors(
            r#"
[accounts."a@corp.example"]
state = "departed"
successor = "b@corp.example"
[accounts."b@corp.example"]
state = "active"
until = 2030-01-01
then = "departed"
forward = ["a+old@corp.example"]
"#,
        );
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert!(errs[0].contains("cycle"), "{}", errs[0]);
    }

    #[test]
    fn depth_and_width_bounds() {
        let mut chain = String::from("[aliases]\n");
        for i in 0..10 {
            chain.push_str(&format!(
                "\"l{i}@corp.example\" = [\"l{}@corp.example\"]\n",
                i + 1
            ));
        }
        let errs = errors(&chain);
        assert!(
            errs.iter()
                .any(|e| e.contains("`l0@corp.example` expands through 10 levels")),
            "{errs:#?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("`l1@corp.example` expands through 9 levels")),
            "{errs:#?}"
        );
        assert_eq!(
            errs.len(),
            2,
            "l2 has exactly 8 levels and is fine: {errs:#?}"
        );

        let members: Vec<String> = (0..1001)
            .map(|i| format!("\"m{i}@corp.example\""))
            .collect();
        let wide = format!(
            "[aliases]\n\"all@corp.example\" = [{}]\n",
            members.join(",")
        );
        let errs = errors(&wide);
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert!(errs[0].contains("expands to 1001 addresses"), "{}", errs[0]);

        // Two halves sharing their 600 members: the bound says 1200, the real width is 600.
        let shared: Vec<String> = (0..600).map(|i| format!("\"m{i}@corp.example\"")).collect();
        let diamond = format!(
            "[aliases]\n\"all@corp.example\" = [\"h1@corp.example\", \"h2@corp.example\"]\n\"h1@corp.example\" = [{s}]\n\"h2@corp.example\" = [{s}]\n",
            s = shared.join(",")
        );
        assert_eq!(errors(&diamond), Vec::<String>::new());
    }

    #[test]
    fn active_members_count_towards_the_width() {
        let policy = |n: usize| {
            let mut text = String::new();
            let members: Vec<String> = (0..n).map(|i| format!("\"a{i}@corp.example\"")).collect();
            text.push_str(&format!(
                "[aliases]\n\"all@corp.example\" = [{}]\n",
                members.join(",")
            ));
            for i in 0..n {
                text.push_str(&format!(
                    "[accounts.\"a{i}@corp.example\"]\nstate = \"active\"\n"
                ));
            }
            errors(&text)
        };
        assert_eq!(policy(MAX_WIDTH), Vec::<String>::new());
        let errs = policy(MAX_WIDTH + 1);
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert!(errs[0].contains("expands to 1001 addresses"), "{}", errs[0]);
    }
}
