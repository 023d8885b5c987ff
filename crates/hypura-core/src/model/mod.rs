//! What the model file says: the GGUF header ([`gguf`]), each architecture family's facts
//! ([`arch`]), the classified tensor inventory ([`inventory`]), and the checks that keep a
//! file llama.cpp would abort on from ever reaching it ([`validate`]).

pub(crate) mod arch;
pub(crate) mod gguf;
pub(crate) mod inventory;
pub(crate) mod validate;

pub(crate) use gguf::{GgufHeader, TensorInfo};
pub(crate) use inventory::ModelInventory;
pub use inventory::Role;

/// Longest excerpt of file content an error message quotes, in bytes once escaped.
const EXCERPT_BYTES: usize = 48;

/// `text` quoted for an error message: control and non-printable characters escaped, cut to
/// a few dozen characters (file content never floods a terminal).
pub(crate) fn excerpt(text: &str) -> String {
    excerpt_within(text, EXCERPT_BYTES)
}

/// [`excerpt`] with room for `max_bytes` of escaped text (a message from llama.cpp, which
/// may quote file content too).
pub(crate) fn excerpt_within(text: &str, max_bytes: usize) -> String {
    let mut out = String::from("'");
    for c in text.chars() {
        let start = out.len();
        if c.is_control() || c == '\'' || c == '\\' || c == '\u{fffd}' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
        if out.len() > max_bytes {
            out.truncate(start);
            out.push_str("...");
            break;
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::excerpt;

    #[test]
    fn excerpts_are_short_and_escaped() {
        assert_eq!(excerpt("blk.0.attn_q.weight"), "'blk.0.attn_q.weight'");
        assert_eq!(excerpt("a\nb\u{1b}[31m"), "'a\\nb\\u{1b}[31m'");
        let long = "x".repeat(10_000_000);
        let e = excerpt(&long);
        assert!(e.len() < 60, "{}", e.len());
        assert!(e.ends_with("...'"));
        let binary: String = std::iter::repeat_n('\u{0}', 1000).collect();
        assert!(excerpt(&binary).len() < 60);
    }
}
