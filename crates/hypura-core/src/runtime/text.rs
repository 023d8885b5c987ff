//! Token bytes to text pieces that are always whole UTF-8: a token may end inside a
//! character (byte-level vocabularies split them), so bytes are held back until the
//! character is complete; bytes that can never form a character become U+FFFD.

/// Turns a stream of token bytes into UTF-8 text pieces.
#[derive(Debug, Default, Clone)]
pub(crate) struct Utf8Pieces {
    pending: Vec<u8>,
}

impl Utf8Pieces {
    /// Adds `bytes`; returns the text that is now complete (possibly empty).
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(text) => {
                    out.push_str(text);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // The prefix up to `valid_up_to` is valid UTF-8.
                    out.push_str(std::str::from_utf8(&self.pending[..valid]).unwrap_or(""));
                    match e.error_len() {
                        // Bytes that can never start or continue a character.
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                        // An incomplete character at the end: wait for more bytes.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                    }
                }
            }
        }
    }

    /// What is left at the end (an incomplete character becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::Utf8Pieces;

    #[test]
    fn characters_split_across_tokens_come_out_whole() {
        let mut p = Utf8Pieces::default();
        let text = "héllo 世界 🙂";
        let mut out = String::new();
        for b in text.as_bytes() {
            let piece = p.push(&[*b]);
            assert!(std::str::from_utf8(piece.as_bytes()).is_ok());
            out.push_str(&piece);
        }
        out.push_str(&p.finish());
        assert_eq!(out, text);
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut p = Utf8Pieces::default();
        assert_eq!(p.push(b"a\xffb"), "a\u{fffd}b");
        assert_eq!(p.push(b"\xe4\xb8"), "");
        assert_eq!(p.finish(), "\u{fffd}");
        assert_eq!(p.push(b"\xe4\xb8x"), "\u{fffd}x");
    }
}
