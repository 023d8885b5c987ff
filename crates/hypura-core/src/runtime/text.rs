//! Token bytes to text pieces that are always whole UTF-8: a token may end inside a
//! character (byte-level vocabularies split them), so bytes are held back until the
//! character is complete; bytes that can never form a character become U+FFFD. Then stop
//! strings ([`StopStrings`]): text that could still turn into one is held back too, and the
//! text ends where one first occurs.

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

/// Text pieces checked against stop strings. Whatever could still become a stop string
/// (the longest end of the text so far that begins one) is held back until the next piece
/// shows it does not, so the text handed on never holds a stop string nor a beginning of
/// one that later completes; at the first stop string the text ends just before it.
#[derive(Debug, Default, Clone)]
pub(crate) struct StopStrings {
    stops: Vec<String>,
    /// Text received but not handed on.
    held: String,
    /// True once a stop string was seen: everything after it is dropped.
    stopped: bool,
}

/// What [`StopStrings::push`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Checked {
    /// The text that is now safe to hand on (possibly empty).
    pub text: String,
    /// True when a stop string occurred: `text` is everything before it, and the
    /// generation should end.
    pub stopped: bool,
}

impl StopStrings {
    /// Checks against `stops` (none empty; with none, text passes straight through).
    pub fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            held: String::new(),
            stopped: false,
        }
    }

    /// Adds `piece` (whole UTF-8, as [`Utf8Pieces`] gives it).
    pub fn push(&mut self, piece: &str) -> Checked {
        if self.stopped {
            return Checked {
                text: String::new(),
                stopped: true,
            };
        }
        if self.stops.is_empty() {
            return Checked {
                text: piece.to_string(),
                stopped: false,
            };
        }
        self.held.push_str(piece);
        // The earliest stop string. Nothing handed on before `held` can begin one: it was
        // held back while it could.
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
        {
            self.held.truncate(at);
            self.stopped = true;
            return Checked {
                text: std::mem::take(&mut self.held),
                stopped: true,
            };
        }
        // The longest end of `held` that begins a stop string stays. A match can only start
        // at a character boundary (a stop string begins with a character's first byte).
        let longest = self.stops.iter().map(String::len).max().unwrap_or(0);
        let from = self.held.len().saturating_sub(longest.saturating_sub(1));
        let keep = (from..self.held.len())
            .filter(|&i| self.held.is_char_boundary(i))
            .find(|&i| {
                let tail = &self.held[i..];
                self.stops.iter().any(|s| s.starts_with(tail))
            })
            .unwrap_or(self.held.len());
        let rest = self.held.split_off(keep);
        Checked {
            text: std::mem::replace(&mut self.held, rest),
            stopped: false,
        }
    }

    /// The end of the generation: what was held back (it can no longer become a stop
    /// string); nothing after a stop string.
    pub fn finish(&mut self) -> String {
        if self.stopped {
            self.held.clear();
        }
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::{StopStrings, Utf8Pieces};

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

    /// Feeds `pieces`; returns every text handed on (finish included) and whether it stopped.
    fn run(stops: &[&str], pieces: &[&str]) -> (Vec<String>, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut s = StopStrings::new(&stops);
        let mut out = Vec::new();
        for piece in pieces {
            let checked = s.push(piece);
            out.push(checked.text);
            if checked.stopped {
                return (out, true);
            }
        }
        out.push(s.finish());
        (out, false)
    }

    #[test]
    fn text_before_a_stop_string_is_handed_on_and_the_rest_dropped() {
        let (out, stopped) = run(&["STOP"], &["Hello ", "wor", "ld STOP and more"]);
        assert!(stopped);
        assert_eq!(out.concat(), "Hello world ");
    }

    #[test]
    fn a_stop_string_split_over_pieces_is_never_handed_on_in_part() {
        let (out, stopped) = run(&["</end>"], &["abc<", "/e", "n", "d>tail"]);
        assert!(stopped);
        assert_eq!(out, vec!["abc", "", "", ""]);
        // A beginning that turns out not to be one is released as soon as that is clear.
        let (out, stopped) = run(&["</end>"], &["abc<", "/e", "x", "yz"]);
        assert!(!stopped);
        assert_eq!(out, vec!["abc", "", "</ex", "yz", ""]);
    }

    #[test]
    fn what_is_held_back_at_the_end_comes_out_at_finish() {
        let (out, stopped) = run(&["\n\nUser:"], &["answer.", "\n", "\n"]);
        assert!(!stopped);
        assert_eq!(out, vec!["answer.", "", "", "\n\n"]);
    }

    #[test]
    fn the_earliest_of_several_stop_strings_wins() {
        let (out, stopped) = run(&["world", "lo w", "xyz"], &["hello world"]);
        assert!(stopped);
        assert_eq!(out.concat(), "hel");
        // Overlapping candidates: "aab" only completes after "aaa..." is resolved.
        let (out, stopped) = run(&["aab"], &["a", "a", "a", "b"]);
        assert!(stopped);
        assert_eq!(out.concat(), "a");
    }

    #[test]
    fn held_text_splits_only_at_characters_and_multibyte_stops_match() {
        let (out, stopped) = run(&["世界"], &["héllo 世", "界!"]);
        assert!(stopped);
        assert_eq!(out, vec!["héllo ", ""]);
        let (out, _) = run(&["🙂x"], &["a🙂", "b"]);
        assert_eq!(out, vec!["a", "🙂b", ""]);
    }

    #[test]
    fn without_stop_strings_text_passes_straight_through() {
        let (out, stopped) = run(&[], &["a", "b"]);
        assert!(!stopped);
        assert_eq!(out, vec!["a", "b", ""]);
    }

    #[test]
    fn any_split_of_a_text_hands_on_the_same_as_the_whole() {
        let text = "The answer is 42.\n\nQuestion: what else? Question";
        for stops in [&["Question:"][..], &["\n\n"], &["else?", "is 4"], &["nope"]] {
            let whole = run(stops, &[text]).0.concat();
            let expected = stops
                .iter()
                .filter_map(|s| text.find(s))
                .min()
                .map_or(text, |at| &text[..at]);
            assert_eq!(whole, expected, "{stops:?}");
            for cut in 0..=text.len() {
                let (a, b) = text.split_at(cut);
                let (out, _) = run(stops, &[a, b]);
                for piece in &out {
                    for s in stops.iter() {
                        assert!(!piece.contains(s), "{piece:?} holds {s:?}");
                    }
                }
                assert_eq!(out.concat(), expected, "{stops:?} cut at {cut}");
            }
        }
    }
}
