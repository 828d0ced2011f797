//! Words: how text is cut into the terms that search matches, for the index and the full scan
//! alike, so that both find the same messages.
//!
//! Latin (and every other space-separated script) is cut at anything that is not a letter or a
//! digit; CJK runs, which have no spaces between words, become overlapping bigrams (`中文字` →
//! `中文`, `文字`), the usual answer where a dictionary segmenter is not wanted (Lucene's
//! `CJKBigramFilter`, mailpiler's Manticore `ngram_len`): any two-character Chinese word inside
//! a run is a term, and a longer one is a phrase of bigrams. A CJK character standing alone is a
//! unigram. Everything is lowercased. Pure: no I/O, and nothing of the domain (the journal's
//! scan uses it too).

use tantivy::tokenizer::{Token, TokenStream, Tokenizer};

/// The name the index registers [`Words`] under.
pub const TOKENIZER: &str = "handoff_words";

/// Longer words are cut to this many bytes: a base64 blob or a pasted hash would otherwise put
/// huge, useless terms in the dictionary (tantivy itself drops terms over 65,530 bytes). The
/// query is cut the same way, so such a word still finds its message.
pub const MAX_WORD_BYTES: usize = 64;

/// Characters of scripts written without spaces between words: Han (CJK ideographs and their
/// extensions and compatibility forms), Hiragana, Katakana and Hangul syllables.
pub fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF        // Hiragana, Katakana
        | 0x3400..=0x4DBF      // CJK Unified Ideographs Extension A
        | 0x4E00..=0x9FFF      // CJK Unified Ideographs
        | 0xAC00..=0xD7AF      // Hangul Syllables
        | 0xF900..=0xFAFF      // CJK Compatibility Ideographs
        | 0x20000..=0x3134F    // Extensions B to G
    )
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() && !is_cjk(c)
}

/// Cuts `text` into terms. Call [`Cutter::next_into`] until it returns `None`.
#[derive(Debug, Clone)]
pub struct Cutter<'a> {
    text: &'a str,
    at: usize,
    /// Inside a CJK run: the previous character and its offset, and whether the run has
    /// produced a term yet (a run of one character is a unigram).
    run: Option<(char, usize, bool)>,
}

impl<'a> Cutter<'a> {
    pub fn new(text: &'a str) -> Cutter<'a> {
        Cutter {
            text,
            at: 0,
            run: None,
        }
    }

    /// Writes the next term into `out` (cleared first) and returns its byte range in the text.
    pub fn next_into(&mut self, out: &mut String) -> Option<(usize, usize)> {
        out.clear();
        loop {
            let rest = &self.text[self.at..];
            let next = rest.chars().next();
            if let Some((prev, from, emitted)) = self.run {
                match next {
                    Some(c) if is_cjk(c) => {
                        let to = self.at + c.len_utf8();
                        out.push(prev);
                        out.push(c);
                        self.run = Some((c, self.at, true));
                        self.at = to;
                        return Some((from, to));
                    }
                    _ => {
                        self.run = None;
                        if !emitted {
                            out.push(prev);
                            return Some((from, from + prev.len_utf8()));
                        }
                    }
                }
                continue;
            }
            // Most mail is ASCII: a word of ASCII letters and digits ended by ASCII (or by the
            // end, or by a character that is no word character) is cut and lowercased byte by
            // byte, with the same result as the path below.
            if let Some((from, to)) = self.ascii_word() {
                out.push_str(&self.text[from..to.min(from + MAX_WORD_BYTES)]);
                out.make_ascii_lowercase();
                self.at = to;
                return Some((from, to));
            }
            let c = next?;
            if c.is_ascii() && !c.is_ascii_alphanumeric() {
                self.at += 1;
                continue;
            }
            if is_cjk(c) {
                self.run = Some((c, self.at, false));
                self.at += c.len_utf8();
                continue;
            }
            if !is_word_char(c) {
                self.at += c.len_utf8();
                continue;
            }
            let from = self.at;
            let len = rest
                .char_indices()
                .find(|&(_, c)| !is_word_char(c))
                .map_or(rest.len(), |(i, _)| i);
            self.at = from + len;
            for c in rest[..len].chars().flat_map(char::to_lowercase) {
                if out.len() + c.len_utf8() > MAX_WORD_BYTES {
                    break;
                }
                out.push(c);
            }
            return Some((from, self.at));
        }
    }

    /// The byte range of the pure-ASCII word at the cursor, if there is one: ASCII letters and
    /// digits, followed by the end of the text or by a character that ends a word.
    fn ascii_word(&self) -> Option<(usize, usize)> {
        let bytes = self.text.as_bytes();
        let from = self.at;
        if !bytes.get(from)?.is_ascii_alphanumeric() {
            return None;
        }
        let len = bytes[from..]
            .iter()
            .position(|b| !b.is_ascii_alphanumeric())
            .unwrap_or(bytes.len() - from);
        let to = from + len;
        let ends = match bytes.get(to) {
            None => true,
            Some(b) if b.is_ascii() => true,
            // `to` follows an ASCII byte: a character boundary.
            Some(_) => self.text[to..]
                .chars()
                .next()
                .is_none_or(|c| !is_word_char(c)),
        };
        ends.then_some((from, to))
    }
}

/// The terms of `text`, in order.
pub fn terms(text: &str) -> Vec<String> {
    let mut cutter = Cutter::new(text);
    let mut out = Vec::new();
    let mut term = String::new();
    while cutter.next_into(&mut term).is_some() {
        out.push(term.clone());
    }
    out
}

/// Whether every query element is found in one of `parts`: an element's terms must appear in
/// one part, next to each other and in order (a word is a phrase of one term; `中文字` is the
/// phrase `中文 文字`). An element without any term (punctuation only) asks for nothing.
pub fn all_found(elements: &[String], parts: &[impl AsRef<str>]) -> bool {
    let parts: Vec<Vec<String>> = parts.iter().map(|p| terms(p.as_ref())).collect();
    elements.iter().all(|e| {
        let wanted = terms(e);
        wanted.is_empty()
            || parts
                .iter()
                .any(|p| p.windows(wanted.len()).any(|w| w == wanted.as_slice()))
    })
}

/// Splits what the user typed into query elements: words at whitespace, and `"a phrase"` in
/// double quotes as one element. An unclosed quote runs to the end.
pub fn split_query(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, chunk) in text.split('"').enumerate() {
        if i % 2 == 1 {
            if !chunk.trim().is_empty() {
                out.push(chunk.trim().to_string());
            }
        } else {
            out.extend(chunk.split_whitespace().map(str::to_string));
        }
    }
    out
}

/// A department as a path (`sales/emea`): its lowercased path and every ancestor, for the
/// filter that includes sub-departments.
pub fn department_paths(dept: &str) -> Vec<String> {
    let dept = normal_department(dept);
    let mut out: Vec<String> = dept
        .match_indices('/')
        .map(|(i, _)| dept[..i].to_string())
        .collect();
    out.push(dept);
    out
}

/// Whether a record's department `dept` is selected by `filter`: the same department, or with
/// `exact` false, one of its sub-departments (`sales` selects `sales/emea`). ASCII
/// case-insensitive, a trailing `/` ignored.
pub fn department_matches(dept: &str, filter: &str, exact: bool) -> bool {
    let (dept, filter) = (normal_department(dept), normal_department(filter));
    dept == filter || (!exact && dept.starts_with(&filter) && dept[filter.len()..].starts_with('/'))
}

/// The form departments are compared in.
pub fn normal_department(dept: &str) -> String {
    let d = dept.trim();
    d.strip_suffix('/').unwrap_or(d).to_ascii_lowercase()
}

/// [`Cutter`] as a tantivy tokenizer, for the index's text fields and its queries.
#[derive(Debug, Clone, Default)]
pub struct Words;

/// The terms of one text, for tantivy.
pub struct WordStream<'a> {
    cutter: Cutter<'a>,
    token: Token,
}

impl Tokenizer for Words {
    type TokenStream<'a> = WordStream<'a>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> WordStream<'a> {
        WordStream {
            cutter: Cutter::new(text),
            token: Token::default(),
        }
    }
}

impl TokenStream for WordStream<'_> {
    fn advance(&mut self) -> bool {
        let Some((from, to)) = self.cutter.next_into(&mut self.token.text) else {
            return false;
        };
        // `Token::default()` starts at position usize::MAX so that the first is 0.
        self.token.position = self.token.position.wrapping_add(1);
        self.token.offset_from = from;
        self.token.offset_to = to;
        self.token.position_length = 1;
        true
    }

    fn token(&self) -> &Token {
        &self.token
    }

    fn token_mut(&mut self) -> &mut Token {
        &mut self.token
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Vec<String> {
        terms(s)
    }

    #[test]
    fn latin_words_are_lowercased_and_cut_at_punctuation() {
        assert_eq!(
            t("Hello, World! re:Invoice-42"),
            ["hello", "world", "re", "invoice", "42"]
        );
        assert_eq!(t("Ünïcode ÉTÉ straße"), ["ünïcode", "été", "straße"]);
        assert_eq!(t("bob@Example.COM"), ["bob", "example", "com"]);
        assert!(t("  ,.;!?  ").is_empty());
        assert!(t("").is_empty());
    }

    #[test]
    fn cjk_runs_become_overlapping_bigrams() {
        assert_eq!(t("中文字"), ["中文", "文字"]);
        assert_eq!(t("季度报告"), ["季度", "度报", "报告"]);
        assert_eq!(t("中文"), ["中文"]);
        // A lone character is a unigram; CJK punctuation separates runs.
        assert_eq!(t("中"), ["中"]);
        assert_eq!(t("你好，世界。"), ["你好", "世界"]);
        assert_eq!(t("一，二"), ["一", "二"]);
        assert_eq!(
            t("ひらがなカタカナ"),
            ["ひら", "らが", "がな", "なカ", "カタ", "タカ", "カナ"]
        );
    }

    #[test]
    fn ascii_around_cjk_is_its_own_word() {
        assert_eq!(
            t("Q3季度报告final"),
            ["q3", "季度", "度报", "报告", "final"]
        );
        assert_eq!(
            t("关于Project X的通知"),
            ["关于", "project", "x", "的通", "通知"]
        );
        assert_eq!(t("a中b"), ["a", "中", "b"]);
    }

    #[test]
    fn long_words_are_cut_on_a_character_boundary() {
        let long = "é".repeat(100);
        let got = t(&long);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0], "é".repeat(MAX_WORD_BYTES / 2));
        assert_eq!(t(&"x".repeat(200))[0].len(), MAX_WORD_BYTES);
    }

    /// The terms as the module's doc defines them, written the slow and obvious way.
    fn reference(text: &str) -> Vec<String> {
        let chars: Vec<char> = text.chars().collect();
        let mut out = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let start = i;
            if is_cjk(chars[i]) {
                while i < chars.len() && is_cjk(chars[i]) {
                    i += 1;
                }
                match i - start {
                    1 => out.push(chars[start].to_string()),
                    _ => out.extend(chars[start..i].windows(2).map(|w| w.iter().collect())),
                }
            } else if is_word_char(chars[i]) {
                while i < chars.len() && is_word_char(chars[i]) {
                    i += 1;
                }
                let mut word = String::new();
                for c in chars[start..i].iter().flat_map(|c| c.to_lowercase()) {
                    if word.len() + c.len_utf8() > MAX_WORD_BYTES {
                        break;
                    }
                    word.push(c);
                }
                out.push(word);
            } else {
                i += 1;
            }
        }
        out
    }

    #[test]
    fn the_ascii_shortcut_cuts_as_every_other_word() {
        let cases = [
            "Hello World",
            "café CAFÉ cafés",
            "abcé",
            "éabc",
            "ABC—def",
            "ABC\u{a0}def",
            "x中y",
            "Q3季度",
            "e-mail: BOB@example.COM!",
            "ṩ1a",
            "1a\u{301}b",
        ];
        for c in cases {
            assert_eq!(t(c), reference(c), "{c:?}");
        }
        let long = format!("{}é {} {}", "A".repeat(70), "b".repeat(64), "C".repeat(63));
        assert_eq!(t(&long), reference(&long));
        // Random text over an alphabet that mixes the cases above.
        let alphabet: Vec<char> = "aZ9 .-éÉß中文字あ\u{a0}\u{301}—Ǆ_".chars().collect();
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..2000 {
            let len = (seed % 40) as usize;
            let s: String = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    alphabet[(seed % alphabet.len() as u64) as usize]
                })
                .collect();
            assert_eq!(t(&s), reference(&s), "{s:?}");
        }
    }

    #[test]
    fn the_tantivy_stream_gives_positions_and_offsets() {
        let text = "Re: 中文字 ok";
        let mut words = Words;
        let mut stream = words.token_stream(text);
        let mut got = Vec::new();
        while stream.advance() {
            let tok = stream.token();
            got.push((
                tok.text.clone(),
                tok.position,
                text[tok.offset_from..tok.offset_to].to_string(),
            ));
        }
        assert_eq!(
            got,
            [
                ("re".to_string(), 0, "Re".to_string()),
                ("中文".to_string(), 1, "中文".to_string()),
                ("文字".to_string(), 2, "文字".to_string()),
                ("ok".to_string(), 3, "ok".to_string()),
            ]
        );
    }

    #[test]
    fn elements_match_as_phrases_within_one_part() {
        let parts = ["Quarterly 季度报告 due", "see the attached invoice"];
        let yes =
            |e: &[&str]| all_found(&e.iter().map(|s| s.to_string()).collect::<Vec<_>>(), &parts);
        assert!(yes(&["季度"]));
        assert!(yes(&["季度报告", "QUARTERLY"]));
        assert!(yes(&["attached invoice", "due"]));
        assert!(yes(&["!!!"]));
        assert!(yes(&[]));
        // Word, not substring; a phrase does not cross parts or skip words.
        assert!(!yes(&["voice"]));
        assert!(!yes(&["due see"]));
        assert!(!yes(&["see attached"]));
        assert!(!yes(&["度"]));
        assert!(!yes(&["季度", "missing"]));
    }

    #[test]
    fn quotes_make_a_phrase_element() {
        assert_eq!(
            split_query(r#"foo "bar baz"  qux"#),
            ["foo", "bar baz", "qux"]
        );
        assert_eq!(split_query(r#""unclosed phrase"#), ["unclosed phrase"]);
        assert_eq!(split_query(r#"a "" b"#), ["a", "b"]);
        assert!(split_query("   ").is_empty());
    }

    #[test]
    fn departments_include_their_sub_departments() {
        assert_eq!(
            department_paths("Sales/EMEA/north"),
            ["sales", "sales/emea", "sales/emea/north"]
        );
        assert_eq!(department_paths("hr"), ["hr"]);
        assert!(department_matches("sales/emea", "sales", false));
        assert!(department_matches("Sales", "SALES/", false));
        assert!(!department_matches("sales/emea", "sales", true));
        assert!(department_matches("sales/emea", "sales/EMEA", true));
        assert!(!department_matches("salesforce", "sales", false));
        assert!(!department_matches("sales", "sales/emea", false));
    }
}
