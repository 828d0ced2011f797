//! SRS addresses on arbitrary input, as they arrive at RCPT: reversing never panics; whatever
//! reverses is then what forwarding wrote. Forwarding an arbitrary sender never panics, and an
//! SRS0 address handoff wrote reverses to the sender it was written for, also with its case
//! folded either way, and is refused once expired.
#![no_main]

use handoff::srs::{MAX_AGE_DAYS, Reversed, Secret, Srs, SrsError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let srs = Srs::new(
        "srs.corp.example",
        vec![Secret::new("fuzz-new"), Secret::new("fuzz-old")],
    )
    .expect("two secrets");
    // Any day, including the first ones and the edges of the 1024-day cycle.
    let day = i64::from(first) * 97 + 1010;

    // As a recipient: never a panic, whatever the shape.
    let _ = srs.reverse(&text, day);

    // As a sender.
    let Ok(rewritten) = srs.forward(&text, day) else {
        return;
    };
    let Some((local, domain)) = text.rsplit_once('@') else {
        panic!("forwarded a sender without `@`: {text:?}");
    };
    if domain.eq_ignore_ascii_case(srs.domain()) {
        assert_eq!(rewritten, text, "a sender of the SRS domain is kept");
        return;
    }
    assert!(rewritten.ends_with("@srs.corp.example"), "{rewritten:?}");
    let back = srs.reverse(&rewritten, day);
    let tagged = |tag: &str| {
        local.len() > 4
            && local.is_char_boundary(4)
            && local[..4].eq_ignore_ascii_case(tag)
            && local[4..].starts_with(['=', '-', '+'])
    };
    if tagged("SRS0") || tagged("SRS1") {
        // SRS1: the bounce goes back to the first hop's SRS0 address.
        assert!(
            matches!(&back, Ok(Reversed::Address(a)) if a.starts_with("SRS0")),
            "{text:?} -> {rewritten:?} -> {back:?}"
        );
        return;
    }
    assert!(!domain.contains('='), "a domain with `=` is refused: {text:?}");
    assert_eq!(back, Ok(Reversed::Address(text.to_string())), "{rewritten:?}");
    for folded in [rewritten.to_ascii_lowercase(), rewritten.to_ascii_uppercase()] {
        match srs.reverse(&folded, day) {
            Ok(Reversed::Address(a)) => assert!(a.eq_ignore_ascii_case(&text), "{a:?}"),
            other => panic!("{folded:?}: {other:?}"),
        }
    }
    let late = day + i64::from(MAX_AGE_DAYS) + 1;
    assert!(
        matches!(srs.reverse(&rewritten, late), Err(SrsError::Expired(_))),
        "{rewritten:?} still valid on day {late}"
    );
});
