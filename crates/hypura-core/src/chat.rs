//! Chat templates: a model's own `tokenizer.chat_template` (Jinja, as Hugging Face writes
//! it), rendered with `minijinja` the way `transformers`' `apply_chat_template` and
//! llama.cpp's Jinja engine render it (blocks trimmed, Python string methods, `raise_exception`,
//! `strftime_now`), with the model's BOS and EOS token texts.
//!
//! ```
//! use hypura_core::{ChatMessage, ChatTemplate};
//!
//! let template = ChatTemplate::new(
//!     "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}\
//!      {% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
//!     "",
//!     "<|im_end|>",
//!     false,
//! )
//! .unwrap();
//! let prompt = template
//!     .render(&[ChatMessage::new("user", "What is the capital of France?")], true)
//!     .unwrap();
//! assert_eq!(
//!     prompt,
//!     "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
//! );
//! ```

use std::ffi::{c_char, CString};

use minijinja::{Environment, Error as JinjaError, ErrorKind, Value};
use serde::{Deserialize, Serialize};

use crate::sys;

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant` (or whatever else the template knows).
    pub role: String,
    /// The message's text.
    pub content: String,
}

impl ChatMessage {
    /// A message from `role`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// Why a chat template cannot be used or rendered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChatTemplateError {
    /// The model file has no `tokenizer.chat_template`.
    #[error("the model has no chat template (tokenizer.chat_template)")]
    Missing,
    /// The template does not parse.
    #[error("the chat template does not parse: {0}")]
    Syntax(String),
    /// Rendering failed, or the template raised an error for these messages.
    #[error("the chat template failed on these messages: {0}")]
    Render(String),
    /// llama.cpp's built-in renderer does not recognize the template.
    #[error("llama.cpp has no built-in renderer for this template")]
    NotBuiltIn,
}

const TEMPLATE_NAME: &str = "chat_template";

/// Instructions a template may run per rendering (real templates need a few thousand per
/// message).
const TEMPLATE_FUEL: u64 = 20_000_000;

/// A compiled chat template with the model's special token texts.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: String,
    eos_token: String,
    adds_bos: bool,
    /// Whether the template renders a system message's text (else it is merged into the next
    /// message, as llama.cpp does).
    supports_system_role: bool,
}

/// How a message's content is given to the template.
#[derive(Debug, Clone, Copy)]
enum Content {
    /// A string, as most templates take it.
    Text,
    /// One text part, `[{"type": "text", "text": …}]`, for templates that index it.
    Parts,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source_bytes", &self.source.len())
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .field("adds_bos", &self.adds_bos)
            .field("supports_system_role", &self.supports_system_role)
            .finish()
    }
}

impl ChatTemplate {
    /// Compiles `source`. `bos_token` and `eos_token` are the texts the template sees;
    /// `adds_bos` says whether the tokenizer adds BOS itself, in which case a BOS text the
    /// template writes at the start is left out (as llama.cpp does), so it is not doubled.
    pub fn new(
        source: &str,
        bos_token: &str,
        eos_token: &str,
        adds_bos: bool,
    ) -> Result<Self, ChatTemplateError> {
        let mut env = Environment::new();
        // As transformers' apply_chat_template (and llama.cpp's Jinja engine) set them up.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        // A template comes from the model file: bound its work, so that a hostile one
        // fails instead of running for ever.
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned(TEMPLATE_NAME, source.to_string())
            .map_err(|e| ChatTemplateError::Syntax(describe(&e)))?;
        let mut template = Self {
            env,
            source: source.to_string(),
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
            adds_bos,
            supports_system_role: true,
        };
        // As llama.cpp probes a template: does a system message's text come out?
        const SYSTEM_PROBE: &str = "System message";
        template.supports_system_role = [Content::Text, Content::Parts].iter().any(|&content| {
            template
                .render_as(
                    &[
                        ChatMessage::new("system", SYSTEM_PROBE),
                        ChatMessage::new("user", "User message"),
                    ],
                    true,
                    content,
                )
                .is_ok_and(|text| text.contains(SYSTEM_PROBE))
        });
        Ok(template)
    }

    /// The template's Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders `messages`; with `add_generation_prompt`, ends with what starts the
    /// assistant's reply.
    ///
    /// Two adjustments llama.cpp's Jinja path makes too: a template that ignores or refuses
    /// a system message (Mistral's first ones) gets it merged into the next message, joined
    /// by a newline; and a template that cannot take a message's content as a string (some
    /// index `content[0]['text']`, as Gemma 3's first one does for the system message) gets
    /// it as one text part, `[{"type": "text", "text": …}]`.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ChatTemplateError> {
        let merged;
        let messages = match messages {
            [first, second, rest @ ..] if first.role == "system" && !self.supports_system_role => {
                merged = std::iter::once(ChatMessage::new(
                    second.role.clone(),
                    format!("{}\n{}", first.content, second.content),
                ))
                .chain(rest.iter().cloned())
                .collect::<Vec<_>>();
                &merged[..]
            }
            [first, rest @ ..] if first.role == "system" && !self.supports_system_role => rest,
            _ => messages,
        };
        match self.render_as(messages, add_generation_prompt, Content::Text) {
            Err(as_text) => self
                .render_as(messages, add_generation_prompt, Content::Parts)
                .map_err(|_| as_text),
            rendered => rendered,
        }
    }

    fn render_as(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        content: Content,
    ) -> Result<String, ChatTemplateError> {
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| ChatTemplateError::Syntax(describe(&e)))?;
        let messages: Vec<Value> = messages
            .iter()
            .map(|m| match content {
                Content::Text => Value::from_serialize(m),
                Content::Parts => minijinja::context! {
                    role => &m.role,
                    content => [minijinja::context! { type => "text", text => &m.content }],
                },
            })
            .collect();
        let rendered = template
            .render(minijinja::context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
            })
            .map_err(|e| ChatTemplateError::Render(describe(&e)))?;
        Ok(self.without_leading_bos(rendered))
    }

    /// The same messages rendered by llama.cpp's built-in renderer
    /// (`llama_chat_apply_template`), which recognizes the major families' templates by
    /// their markers without running them: for comparison.
    pub fn render_with_llama_cpp(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ChatTemplateError> {
        let nul = |_| ChatTemplateError::Render("a NUL byte in the text".into());
        let source = CString::new(self.source.as_str()).map_err(nul)?;
        let texts: Vec<(CString, CString)> = messages
            .iter()
            .map(|m| {
                Ok((
                    CString::new(m.role.as_str()).map_err(nul)?,
                    CString::new(m.content.as_str()).map_err(nul)?,
                ))
            })
            .collect::<Result<_, ChatTemplateError>>()?;
        let chat: Vec<sys::llama_chat_message> = texts
            .iter()
            .map(|(role, content)| sys::llama_chat_message {
                role: role.as_ptr(),
                content: content.as_ptr(),
            })
            .collect();
        let mut buf = vec![0u8; 2 * messages.iter().map(|m| m.content.len()).sum::<usize>() + 256];
        for _ in 0..2 {
            let capacity = i32::try_from(buf.len()).unwrap_or(i32::MAX);
            // SAFETY: the strings outlive the call; `chat` holds `chat.len()` messages; the
            // buffer is valid for `capacity` bytes.
            let n = unsafe {
                sys::llama_chat_apply_template(
                    source.as_ptr(),
                    chat.as_ptr(),
                    chat.len(),
                    add_generation_prompt,
                    buf.as_mut_ptr().cast::<c_char>(),
                    capacity,
                )
            };
            let Ok(n) = usize::try_from(n) else {
                return Err(ChatTemplateError::NotBuiltIn);
            };
            if n <= buf.len() {
                buf.truncate(n);
                let text = String::from_utf8_lossy(&buf).into_owned();
                return Ok(self.without_leading_bos(text));
            }
            buf.resize(n, 0);
        }
        Err(ChatTemplateError::Render(
            "llama.cpp's renderer changed its length".into(),
        ))
    }

    fn without_leading_bos(&self, text: String) -> String {
        if self.adds_bos && !self.bos_token.is_empty() {
            if let Some(rest) = text.strip_prefix(&self.bos_token) {
                return rest.to_string();
            }
        }
        text
    }
}

fn describe(e: &JinjaError) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

fn raise_exception(message: String) -> Result<Value, JinjaError> {
    Err(JinjaError::new(ErrorKind::InvalidOperation, message))
}

fn strftime_now(format: String) -> Result<Value, JinjaError> {
    use std::fmt::Write;
    let mut text = String::new();
    write!(text, "{}", chrono::Local::now().format(&format)).map_err(|_| {
        JinjaError::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now: bad format {format:?}"),
        )
    })?;
    Ok(Value::from(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

    #[test]
    fn a_template_without_a_system_role_gets_it_merged_into_the_next_message() {
        let t = ChatTemplate::new(
            "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('no') }}\
             {% endif %}[{{ m.role }}] {{ m.content }}\n{% endfor %}",
            "",
            "",
            false,
        )
        .unwrap();
        let system = ChatMessage::new("system", "Be brief.");
        let user = ChatMessage::new("user", "Hi");
        assert_eq!(
            t.render(&[system.clone(), user.clone()], false).unwrap(),
            "[user] Be brief.\nHi\n"
        );
        assert_eq!(t.render(&[system], false).unwrap(), "");
        assert_eq!(t.render(&[user], false).unwrap(), "[user] Hi\n");
    }

    #[test]
    fn a_template_that_indexes_content_parts_gets_them() {
        let t = ChatTemplate::new(
            "{% for m in messages %}{{ m.content[0]['text'] + '|' }}{% endfor %}",
            "",
            "",
            false,
        )
        .unwrap();
        let messages = [
            ChatMessage::new("system", "Be brief."),
            ChatMessage::new("user", "Hi"),
        ];
        assert_eq!(t.render(&messages, false).unwrap(), "Be brief.|Hi|");
    }

    #[test]
    fn renders_as_llama_cpp_does() {
        let t = ChatTemplate::new(CHATML, "", "<|im_end|>", false).unwrap();
        let messages = [
            ChatMessage::new("system", "Be brief."),
            ChatMessage::new("user", "Hi"),
            ChatMessage::new("assistant", "Hello."),
            ChatMessage::new("user", "Capital of France?"),
        ];
        for add in [false, true] {
            assert_eq!(
                t.render(&messages, add).unwrap(),
                t.render_with_llama_cpp(&messages, add).unwrap()
            );
        }
    }

    #[test]
    fn python_methods_errors_and_bos() {
        let t = ChatTemplate::new(
            "{{ bos_token }}{% for m in messages %}{% if m.role == 'tool' %}{{ raise_exception('no tools: ' + m.role) }}{% endif %}{{ m.content.strip().upper() }}{% endfor %}",
            "<s>",
            "</s>",
            true,
        )
        .unwrap();
        assert_eq!(
            t.render(&[ChatMessage::new("user", "  hi ")], false)
                .unwrap(),
            "HI"
        );
        let e = t
            .render(&[ChatMessage::new("tool", "x")], false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no tools: tool"), "{e}");
        assert!(matches!(
            ChatTemplate::new("{% for %}", "", "", false),
            Err(ChatTemplateError::Syntax(_))
        ));
        assert!(matches!(
            ChatTemplate::new("no markers at all", "", "", false)
                .unwrap()
                .render_with_llama_cpp(&[ChatMessage::new("user", "x")], true),
            Err(ChatTemplateError::NotBuiltIn)
        ));
    }

    #[test]
    fn a_template_that_never_ends_runs_out_of_fuel() {
        let t = ChatTemplate::new(
            "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}",
            "",
            "",
            false,
        )
        .unwrap();
        let e = t.render(&[], false).unwrap_err().to_string();
        assert!(e.contains("fuel"), "{e}");
    }

    #[test]
    fn strftime_now_formats_today() {
        let t = ChatTemplate::new("{{ strftime_now('%Y') }}", "", "", false).unwrap();
        let year = t.render(&[], false).unwrap();
        assert_eq!(year.len(), 4, "{year}");
        assert!(year.starts_with("20"), "{year}");
    }
}
