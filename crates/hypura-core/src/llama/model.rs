//! The loaded llama.cpp model (weights and vocabulary), freed on drop.

use std::ffi::CString;
use std::path::Path;
use std::ptr::NonNull;

use crate::sys;

/// A model loaded by llama.cpp.
#[derive(Debug)]
pub(crate) struct LlamaModel(NonNull<sys::llama_model>);

// SAFETY: a llama.cpp model may be used from any thread; hypura uses it from one at a time.
unsafe impl Send for LlamaModel {}

impl LlamaModel {
    /// Loads `path` with `params`; the error is llama.cpp's last logged error (if any).
    ///
    /// # Safety
    /// Pointers inside `params` (tensor buffer-type overrides, progress callback and its
    /// data) must stay valid for the duration of the call.
    pub unsafe fn load(path: &Path, params: sys::llama_model_params) -> Result<Self, String> {
        let c_path = CString::new(path.to_string_lossy().as_bytes())
            .map_err(|_| "the path contains a NUL byte".to_string())?;
        super::backend::clear_last_error();
        // SAFETY: a valid C string; the caller keeps the params' pointers valid.
        let raw = unsafe { sys::llama_model_load_from_file(c_path.as_ptr(), params) };
        NonNull::new(raw).map(Self).ok_or_else(|| {
            super::backend::take_last_error().unwrap_or_else(|| "unknown error".to_string())
        })
    }

    pub fn as_ptr(&self) -> *mut sys::llama_model {
        self.0.as_ptr()
    }

    fn vocab(&self) -> *const sys::llama_vocab {
        // SAFETY: the model is live.
        unsafe { sys::llama_model_get_vocab(self.0.as_ptr()) }
    }

    /// Vocabulary size.
    pub fn n_vocab(&self) -> usize {
        // SAFETY: the vocabulary belongs to the live model.
        unsafe { sys::llama_vocab_n_tokens(self.vocab()) }.max(0) as usize
    }

    /// True for end-of-generation tokens.
    pub fn is_eog(&self, token: i32) -> bool {
        if token < 0 || token as usize >= self.n_vocab() {
            return false;
        }
        // SAFETY: the vocabulary belongs to the live model; the token is in range.
        unsafe { sys::llama_vocab_is_eog(self.vocab(), token) }
    }

    /// Tokenizes `text`, adding BOS when `add_special` and the model wants it; `None` when
    /// llama.cpp fails.
    pub fn tokenize(&self, text: &[u8], add_special: bool) -> Option<Vec<i32>> {
        let len = i32::try_from(text.len()).ok()?;
        let mut tokens = vec![0i32; text.len() + 8];
        for _ in 0..2 {
            let capacity = i32::try_from(tokens.len()).ok()?;
            // SAFETY: the buffers are valid for the lengths passed.
            let n = unsafe {
                sys::llama_tokenize(
                    self.vocab(),
                    text.as_ptr().cast(),
                    len,
                    tokens.as_mut_ptr(),
                    capacity,
                    add_special,
                    true,
                )
            };
            if n >= 0 {
                tokens.truncate(n as usize);
                return Some(tokens);
            }
            tokens.resize(n.unsigned_abs() as usize, 0);
        }
        None
    }

    /// The bytes of one token's text (empty for an id outside the vocabulary).
    pub fn token_bytes(&self, token: i32) -> Vec<u8> {
        self.piece(token, false)
    }

    /// A token's text; with `special`, control tokens (BOS, EOS…) as their text (`<s>`)
    /// rather than nothing.
    fn piece(&self, token: i32, special: bool) -> Vec<u8> {
        if token < 0 || token as usize >= self.n_vocab() {
            return Vec::new();
        }
        let mut buf = vec![0u8; 64];
        for _ in 0..2 {
            // SAFETY: the buffer is valid for its length; the token is in range.
            let n = unsafe {
                sys::llama_token_to_piece(
                    self.vocab(),
                    token,
                    buf.as_mut_ptr().cast(),
                    buf.len() as i32,
                    0,
                    special,
                )
            };
            if n >= 0 {
                buf.truncate(n as usize);
                return buf;
            }
            buf.resize(n.unsigned_abs() as usize, 0);
        }
        Vec::new()
    }

    /// The model's default chat template (`tokenizer.chat_template`), if it has one.
    pub fn chat_template(&self) -> Option<String> {
        // SAFETY: the model is live; a NULL name asks for the default template.
        let text = unsafe { sys::llama_model_chat_template(self.0.as_ptr(), std::ptr::null()) };
        if text.is_null() {
            return None;
        }
        // SAFETY: llama.cpp returns a NUL-terminated string owned by the model.
        Some(
            unsafe { std::ffi::CStr::from_ptr(text) }
                .to_string_lossy()
                .into_owned(),
        )
    }

    /// The text of a special token as a template writes it (e.g. `<s>`), or "" for none.
    pub fn special_text(&self, token: i32) -> String {
        String::from_utf8_lossy(&self.piece(token, true)).into_owned()
    }

    /// The BOS and EOS token ids (-1 where the vocabulary has none).
    pub fn bos_eos(&self) -> (i32, i32) {
        // SAFETY: the vocabulary belongs to the live model.
        unsafe {
            (
                sys::llama_vocab_bos(self.vocab()),
                sys::llama_vocab_eos(self.vocab()),
            )
        }
    }

    /// True when tokenizing with special tokens adds BOS.
    pub fn adds_bos(&self) -> bool {
        // SAFETY: the vocabulary belongs to the live model.
        unsafe { sys::llama_vocab_get_add_bos(self.vocab()) }
    }

    /// The number of weights (parameters) of the model.
    pub fn n_params(&self) -> u64 {
        // SAFETY: the model is live.
        unsafe { sys::llama_model_n_params(self.0.as_ptr()) }
    }

    /// The GGUF metadata value of `key` as text (numbers written out), if it is there and
    /// is not an array.
    pub fn meta_str(&self, key: &str) -> Option<String> {
        let key = CString::new(key).ok()?;
        let mut buf = vec![0u8; 256];
        for _ in 0..2 {
            // SAFETY: a valid C string; the buffer is valid for its length. llama.cpp writes
            // at most `len` bytes, NUL included, and returns the value's full length.
            let n = unsafe {
                sys::llama_model_meta_val_str(
                    self.0.as_ptr(),
                    key.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            };
            let n = usize::try_from(n).ok()?;
            if n < buf.len() {
                buf.truncate(n);
                return Some(String::from_utf8_lossy(&buf).into_owned());
            }
            buf.resize(n + 1, 0);
        }
        None
    }
}

impl Drop for LlamaModel {
    fn drop(&mut self) {
        // SAFETY: created by llama_model_load_from_file and freed once, here.
        unsafe { sys::llama_model_free(self.0.as_ptr()) }
    }
}
