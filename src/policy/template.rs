//! Auto-reply templates: text with `{placeholder}`s, checked when the policy loads.
//!
//! `{{` and `}}` stand for literal braces. Unknown placeholders are load errors, so a typo such as
//! `{sucessor}` is caught by `handoff check`, not by a customer reading a broken reply.

/// The values a template may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Placeholder {
    Name,
    Successor,
    Address,
    Department,
    OriginalSubject,
}

impl Placeholder {
    pub const ALL: [Placeholder; 5] = [
        Placeholder::Name,
        Placeholder::Successor,
        Placeholder::Address,
        Placeholder::Department,
        Placeholder::OriginalSubject,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Placeholder::Name => "name",
            Placeholder::Successor => "successor",
            Placeholder::Address => "address",
            Placeholder::Department => "department",
            Placeholder::OriginalSubject => "original_subject",
        }
    }

    fn from_name(s: &str) -> Option<Placeholder> {
        Placeholder::ALL.into_iter().find(|p| p.name() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Var(Placeholder),
}

/// A parsed template string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text {
    pieces: Vec<Piece>,
}

/// A template problem, with the byte offset inside the template string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unknown placeholder `{{{name}}}` (known: {known})")]
    Unknown {
        name: String,
        offset: usize,
        known: String,
    },
    #[error("`{{` at byte {offset} is not closed (write `{{{{` for a literal brace)")]
    Unclosed { offset: usize },
    #[error("lone `}}` at byte {offset} (write `}}}}` for a literal brace)")]
    LoneClose { offset: usize },
}

impl TemplateError {
    pub fn offset(&self) -> usize {
        match self {
            TemplateError::Unknown { offset, .. }
            | TemplateError::Unclosed { offset }
            | TemplateError::LoneClose { offset } => *offset,
        }
    }
}

/// What to fill the placeholders with.
#[derive(Debug, Clone, Default)]
pub struct Values<'a> {
    pub name: &'a str,
    pub successor: &'a str,
    pub address: &'a str,
    pub department: &'a str,
    pub original_subject: &'a str,
}

impl Text {
    /// Parses a template, returning every error in it.
    pub fn parse(s: &str) -> Result<Text, Vec<TemplateError>> {
        let mut pieces = Vec::new();
        let mut errors = Vec::new();
        let mut lit = String::new();
        let mut rest = s;
        let mut pos = 0;
        while let Some(i) = rest.find(['{', '}']) {
            lit.push_str(&rest[..i]);
            let at = pos + i;
            let tail = &rest[i..];
            let consumed = if tail.starts_with("{{") {
                lit.push('{');
                2
            } else if tail.starts_with("}}") {
                lit.push('}');
                2
            } else if tail.starts_with('}') {
                errors.push(TemplateError::LoneClose { offset: at });
                1
            } else if let Some(end) = tail.find('}') {
                let name = &tail[1..end];
                match Placeholder::from_name(name.trim()) {
                    Some(p) => {
                        if !lit.is_empty() {
                            pieces.push(Piece::Text(std::mem::take(&mut lit)));
                        }
                        pieces.push(Piece::Var(p));
                    }
                    None => errors.push(TemplateError::Unknown {
                        name: name.to_string(),
                        offset: at,
                        known: Placeholder::ALL
                            .map(|p| format!("{{{}}}", p.name()))
                            .join(", "),
                    }),
                }
                end + 1
            } else {
                errors.push(TemplateError::Unclosed { offset: at });
                tail.len()
            };
            rest = &tail[consumed..];
            pos = at + consumed;
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            pieces.push(Piece::Text(lit));
        }
        if errors.is_empty() {
            Ok(Text { pieces })
        } else {
            Err(errors)
        }
    }

    pub fn render(&self, v: &Values<'_>) -> String {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Var(Placeholder::Name) => out.push_str(v.name),
                Piece::Var(Placeholder::Successor) => out.push_str(v.successor),
                Piece::Var(Placeholder::Address) => out.push_str(v.address),
                Piece::Var(Placeholder::Department) => out.push_str(v.department),
                Piece::Var(Placeholder::OriginalSubject) => out.push_str(v.original_subject),
            }
        }
        out
    }

    pub fn uses(&self, p: Placeholder) -> bool {
        self.pieces.contains(&Piece::Var(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_placeholders_and_escapes() {
        let t = Text::parse("{name} left; write to {successor} {{literal}} re: {original_subject}")
            .unwrap();
        let v = Values {
            name: "User One",
            successor: "cs@corp.example",
            original_subject: "Hi",
            ..Default::default()
        };
        assert_eq!(
            t.render(&v),
            "User One left; write to cs@corp.example {literal} re: Hi"
        );
        assert!(t.uses(Placeholder::Name));
        assert!(!t.uses(Placeholder::Department));
    }

    #[test]
    fn chinese_text_is_kept() {
        let t = Text::parse("{name} 已离职，请联系 {successor}。").unwrap();
        let v = Values {
            name: "张三",
            successor: "li@corp.example",
            ..Default::default()
        };
        assert_eq!(t.render(&v), "张三 已离职，请联系 li@corp.example。");
    }

    #[test]
    fn reports_every_error_with_offsets() {
        let errs = Text::parse("hi {nmae} and } and {successor").unwrap_err();
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(
            matches!(&errs[0], TemplateError::Unknown { name, offset: 3, .. } if name == "nmae")
        );
        assert!(matches!(errs[1], TemplateError::LoneClose { offset: 14 }));
        assert!(matches!(errs[2], TemplateError::Unclosed { offset: 20 }));
        assert!(errs[0].to_string().contains("{successor}"));
    }
}
