//! Component values as people read them, for interceptors: `"text"`, `42`,
//! `[1, 2]`, `{name: "x"}`, `some(3)`, `ok("y")`, `red`, `{read, write}`.
//!
//! Invariant: the text of one value is at most [`MAX_RENDERED`] characters;
//! a longer one is cut and ends with `…`, so a guest's huge argument costs
//! the advice nothing much, and a cut is always visible.

use std::fmt::Write as _;

use wasmtime::component::Val;

/// The most characters one rendered value keeps.
pub(super) const MAX_RENDERED: usize = 1024;

/// `value` rendered, cut at [`MAX_RENDERED`] characters.
pub(super) fn render(value: &Val) -> String {
    let mut out = String::new();
    write_value(value, &mut out);
    cut(out)
}

/// Several values (a function's results), comma-separated; empty for none.
pub(super) fn render_all(values: &[Val]) -> String {
    let mut out = String::new();
    for (index, value) in values.iter().enumerate() {
        if index > 0 {
            out.push_str(", ");
        }
        write_value(value, &mut out);
        if out.len() > MAX_RENDERED * 4 {
            break;
        }
    }
    cut(out)
}

fn cut(mut out: String) -> String {
    if let Some((end, _)) = out.char_indices().nth(MAX_RENDERED) {
        out.truncate(end);
        out.push('…');
    }
    out
}

fn write_value(value: &Val, out: &mut String) {
    // Past the cap there is nothing more to see: stop walking big values.
    if out.len() > MAX_RENDERED * 4 {
        return;
    }
    match value {
        Val::Bool(flag) => push(out, flag),
        Val::S8(number) => push(out, number),
        Val::U8(number) => push(out, number),
        Val::S16(number) => push(out, number),
        Val::U16(number) => push(out, number),
        Val::S32(number) => push(out, number),
        Val::U32(number) => push(out, number),
        Val::S64(number) => push(out, number),
        Val::U64(number) => push(out, number),
        Val::Float32(number) => push(out, number),
        Val::Float64(number) => push(out, number),
        Val::Char(c) => {
            let _ = write!(out, "{c:?}");
        }
        Val::String(text) => {
            let _ = write!(out, "{text:?}");
        }
        Val::List(items) | Val::FixedLengthList(items) => {
            out.push('[');
            sequence(items.iter(), out, write_value);
            out.push(']');
        }
        Val::Tuple(items) => {
            out.push('(');
            sequence(items.iter(), out, write_value);
            out.push(')');
        }
        Val::Map(entries) => {
            out.push('{');
            sequence(entries.iter(), out, |(key, value), out| {
                write_value(key, out);
                out.push_str(": ");
                write_value(value, out);
            });
            out.push('}');
        }
        Val::Record(fields) => {
            out.push('{');
            sequence(fields.iter(), out, |(name, value), out| {
                out.push_str(name);
                out.push_str(": ");
                write_value(value, out);
            });
            out.push('}');
        }
        Val::Variant(case, payload) => wrapped(out, case, payload.as_deref()),
        Val::Enum(case) => out.push_str(case),
        Val::Option(None) => out.push_str("none"),
        Val::Option(Some(inner)) => wrapped(out, "some", Some(inner)),
        Val::Result(Ok(inner)) => wrapped(out, "ok", inner.as_deref()),
        Val::Result(Err(inner)) => wrapped(out, "err", inner.as_deref()),
        Val::Flags(names) => {
            out.push('{');
            sequence(names.iter(), out, |name, out| out.push_str(name));
            out.push('}');
        }
        // Never crosses between components (refused at load); named for
        // completeness.
        Val::Resource(_) => out.push_str("<resource>"),
        Val::Future(_) => out.push_str("<future>"),
        Val::Stream(_) => out.push_str("<stream>"),
        Val::ErrorContext(_) => out.push_str("<error-context>"),
    }
}

fn push(out: &mut String, value: impl std::fmt::Display) {
    let _ = write!(out, "{value}");
}

fn wrapped(out: &mut String, name: &str, payload: Option<&Val>) {
    out.push_str(name);
    if let Some(payload) = payload {
        out.push('(');
        write_value(payload, out);
        out.push(')');
    }
}

fn sequence<I: Iterator>(items: I, out: &mut String, mut each: impl FnMut(I::Item, &mut String)) {
    for (index, item) in items.enumerate() {
        if index > 0 {
            out.push_str(", ");
        }
        each(item, out);
        if out.len() > MAX_RENDERED * 4 {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_like_wit() {
        let call = Val::Record(vec![
            ("text".into(), Val::String("Hello, \"World\"!".into())),
            ("count".into(), Val::U32(3)),
            (
                "tags".into(),
                Val::List(vec![
                    Val::Enum("red".into()),
                    Val::Flags(vec!["read".into(), "write".into()]),
                ]),
            ),
            ("maybe".into(), Val::Option(Some(Box::new(Val::S64(-1))))),
            ("none".into(), Val::Option(None)),
            ("done".into(), Val::Result(Ok(None))),
            (
                "failed".into(),
                Val::Result(Err(Some(Box::new(Val::Char('x'))))),
            ),
            (
                "pair".into(),
                Val::Tuple(vec![Val::Bool(true), Val::Float64(0.5)]),
            ),
            (
                "shape".into(),
                Val::Variant("circle".into(), Some(Box::new(Val::Float32(2.0)))),
            ),
        ]);
        assert_eq!(
            render(&call),
            r#"{text: "Hello, \"World\"!", count: 3, tags: [red, {read, write}], maybe: some(-1), none: none, done: ok, failed: err('x'), pair: (true, 0.5), shape: circle(2)}"#
        );
        assert_eq!(render_all(&[]), "");
        assert_eq!(
            render_all(&[Val::String("Hallo, Welt!".into())]),
            r#""Hallo, Welt!""#
        );
    }

    #[test]
    fn a_huge_value_is_cut_visibly() {
        let big = Val::List((0..100_000).map(Val::U32).collect());
        let text = render(&big);
        assert_eq!(text.chars().count(), MAX_RENDERED + 1);
        assert!(text.ends_with('…'));
        let long = render(&Val::String("é".repeat(5000)));
        assert_eq!(long.chars().count(), MAX_RENDERED + 1);
    }
}
