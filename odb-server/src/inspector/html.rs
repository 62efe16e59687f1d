//! HTML for the inspector's pages: escaping, the common layout and decoded values.
//!
//! Everything shown comes from the database (names and values are user data), so every piece
//! of text goes through [`escape`] or [`Html::text`]; markup is only ever written by this
//! module's callers as literals.

use odb_wire::catalog::Decoded;
use odb_wire::describe::Value;
use std::fmt::Write;

/// The longest text shown for one value in a table; the object's own page shows it whole.
pub(crate) const CELL_CHARS: usize = 200;

/// Text made safe for HTML element content and quoted attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Text cut to at most `max` characters, with an ellipsis when cut.
pub(crate) fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// An HTML document being written.
#[derive(Default)]
pub(crate) struct Html {
    out: String,
}

impl Html {
    /// Appends markup written by the inspector itself (never data).
    pub fn raw(&mut self, markup: &str) -> &mut Self {
        self.out.push_str(markup);
        self
    }

    /// Appends text, escaped.
    pub fn text(&mut self, text: &str) -> &mut Self {
        self.out.push_str(&escape(text));
        self
    }

    /// Appends a link; both the address and the text are escaped.
    pub fn link(&mut self, href: &str, text: &str) -> &mut Self {
        let _ = write!(
            self.out,
            "<a href=\"{}\">{}</a>",
            escape(href),
            escape(text)
        );
        self
    }

    /// Appends a decoded value: a reference becomes a link to the object it names, and the
    /// text is cut to `max` characters.
    pub fn value(&mut self, value: &Decoded, max: usize) -> &mut Self {
        let referenced = match value {
            Decoded::Value(Value::Ref { id, .. }) => Some(*id),
            Decoded::Value(Value::Option(Some(inner))) => match inner.as_ref() {
                Value::Ref { id, .. } => Some(*id),
                _ => None,
            },
            _ => None,
        };
        let shown = shorten(&value.to_string(), max);
        match referenced {
            Some(id) => self.link(&format!("/objects/{id}"), &shown),
            None => {
                let class = if matches!(value, Decoded::Raw { .. }) {
                    "raw"
                } else {
                    "value"
                };
                let _ = write!(
                    self.out,
                    "<span class=\"{class}\">{}</span>",
                    escape(&shown)
                );
                self
            }
        }
    }

    /// The finished document.
    pub fn finish(self) -> String {
        self.out
    }
}

/// A whole page: the layout around `body`, which is already markup. `signed_in` adds the
/// navigation and the sign-out button.
pub(crate) fn page(title: &str, signed_in: bool, body: &str) -> String {
    let mut html = Html::default();
    html.raw("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">")
        .raw("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">")
        .raw("<title>")
        .text(title)
        .raw(" · ODB inspector</title>")
        .raw("<link rel=\"stylesheet\" href=\"/assets/inspector.css\">")
        .raw("<script src=\"/assets/inspector.js\" defer></script></head><body><header>")
        .raw("<a class=\"brand\" href=\"/\">ODB inspector</a>");
    if signed_in {
        html.raw("<nav><a href=\"/\">Overview</a><a href=\"/connections\">Connections</a>")
            .raw("<a href=\"/metrics\">Metrics</a></nav>")
            .raw("<form method=\"post\" action=\"/logout\"><button type=\"submit\">Sign out")
            .raw("</button></form>");
    }
    html.raw("</header><main><h1>")
        .text(title)
        .raw("</h1>")
        .raw(body)
        .raw("</main></body></html>\n");
    html.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_data_is_escaped() {
        assert_eq!(
            escape("<script>alert('x' & \"y\")</script>"),
            "&lt;script&gt;alert(&#39;x&#39; &amp; &quot;y&quot;)&lt;/script&gt;"
        );
        let mut html = Html::default();
        html.value(&Decoded::Value(Value::String("<b>".into())), 10);
        html.link("/x?a=\"", "<i>");
        let out = html.finish();
        assert!(!out.contains("<b>") && !out.contains("<i>"), "{out}");
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        assert_eq!(shorten("héllo", 2), "hé…");
        assert_eq!(shorten("hé", 2), "hé");
    }

    #[test]
    fn references_become_links() {
        let mut html = Html::default();
        html.value(
            &Decoded::Value(Value::Ref {
                type_name: "s.T".into(),
                id: 7,
            }),
            50,
        );
        assert!(html.finish().contains("href=\"/objects/7\""));
    }
}
