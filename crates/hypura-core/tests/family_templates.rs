//! The chat templates of the major model families, as their GGUF files carry them
//! (`tokenizer.chat_template`), render exactly what llama.cpp's own renderer
//! (`llama_chat_apply_template`) renders for the same messages, but where that renderer (which
//! recognizes a family by its markers and writes the family's format itself, without running
//! the template) departs from what the template itself writes: each such place is listed
//! with its family ([`Family::template_writes`]), and checked to be exactly that.
//!
//! The templates come from Hugging Face's MIT-licensed npm package `@huggingface/ollama-utils`
//! (its `chat-template-automap.ts` maps the GGUF template of each model in Ollama's library),
//! and gpt-oss's, which that map lacks, from llama.cpp's own `models/templates` as the
//! MIT-licensed `llama-cpp-python` source package on PyPI vendors it; `scripts/test.sh` fetches
//! the pinned versions into `target/chat-templates`.

use std::collections::HashMap;
use std::path::PathBuf;

use hypura_core::{ChatMessage, ChatTemplate};

/// The fetched map of templates.
fn automap() -> String {
    template_file("chat-template-automap.ts")
}

/// Reads the JavaScript string literal that starts at `text[0]` (a `"` or `'`); returns it
/// and the rest of `text`.
fn string_literal(text: &str) -> (String, &str) {
    let mut chars = text.char_indices();
    let (_, quote) = chars.next().expect("a string literal");
    assert!(quote == '"' || quote == '\'', "not a string literal");
    let mut out = String::new();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                let (_, escaped) = chars.next().expect("an escape");
                match escaped {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    'u' => {
                        let hex: String = (0..4).map(|_| chars.next().unwrap().1).collect();
                        let unit = u32::from_str_radix(&hex, 16).unwrap();
                        out.push(char::from_u32(unit).expect("no surrogate pairs here"));
                    }
                    other => out.push(other),
                }
            }
            c if c == quote => return (out, &text[i + 1..]),
            c => out.push(c),
        }
    }
    panic!("an unterminated string literal");
}

/// A file fetched into `target/chat-templates`; the suite fails, never skips, when it is
/// missing.
fn template_file(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/chat-templates")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: run scripts/test.sh (it fetches the families' chat templates)",
            path.display()
        )
    })
}

/// Each model's GGUF chat template, by its name in Ollama's library (`library/llama3:8b`),
/// and the files fetched beside the map by their file name.
fn templates() -> HashMap<String, String> {
    let text = automap();
    let mut templates = HashMap::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("model: ") {
        let (model, after) = string_literal(&rest[at + "model: ".len()..]);
        let at = after
            .find("gguf: ")
            .expect("a gguf template after the model");
        let (template, after) = string_literal(&after[at + "gguf: ".len()..]);
        templates.insert(model, template);
        rest = after;
    }
    templates.insert(GPT_OSS.to_string(), template_file(GPT_OSS));
    templates
}

/// gpt-oss's template (not in Ollama's map): llama.cpp's own copy, from `models/templates`.
const GPT_OSS: &str = "openai-gpt-oss-120b.jinja";

/// A family's model, with the special token texts its tokenizer gives the template, and
/// whether its tokenizer adds BOS itself.
struct Family {
    name: &'static str,
    model: &'static str,
    bos: &'static str,
    eos: &'static str,
    adds_bos: bool,
    /// What the template writes, given what llama.cpp's built-in renderer writes for a
    /// conversation (whether it opens with a system message, whether a generation prompt is
    /// asked for), where the two differ.
    template_writes: fn(String, bool, bool) -> String,
}

/// The template writes what llama.cpp's renderer writes.
fn same(llama: String, _system: bool, _generation_prompt: bool) -> String {
    llama
}

const FAMILIES: &[Family] = &[
    Family {
        name: "Llama 3",
        model: "library/llama3:8b",
        bos: "<|begin_of_text|>",
        eos: "<|eot_id|>",
        adds_bos: true,
        template_writes: same,
    },
    Family {
        name: "ChatML (Qwen 2.5)",
        model: "library/qwen2.5-coder:1.5b",
        bos: "",
        eos: "<|im_end|>",
        adds_bos: false,
        // Without a system message the template writes its own.
        template_writes: |llama, system, _| {
            if system {
                llama
            } else {
                "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful \
                 assistant.<|im_end|>\n"
                    .to_string()
                    + &llama
            }
        },
    },
    Family {
        name: "Gemma 3",
        model: "library/gemma3:1b",
        bos: "<bos>",
        eos: "<eos>",
        adds_bos: true,
        template_writes: same,
    },
    Family {
        name: "Mistral",
        model: "library/mistral:7b-instruct-fp16",
        bos: "<s>",
        eos: "</s>",
        adds_bos: true,
        // The template ends an assistant message with `eos_token + ' '`.
        template_writes: |llama, _, _| llama.replace("</s>[INST]", "</s> [INST]"),
    },
    Family {
        name: "Phi 3",
        model: "library/phi3:3.8b",
        bos: "<s>",
        eos: "<|endoftext|>",
        adds_bos: false,
        // Without a generation prompt the template ends with `eos_token`.
        template_writes: |llama, _, generation_prompt| {
            if generation_prompt {
                llama
            } else {
                llama + "<|endoftext|>"
            }
        },
    },
    Family {
        name: "Phi 4",
        model: "library/phi4:14b",
        bos: "<|endoftext|>",
        eos: "<|im_end|>",
        adds_bos: false,
        // The template opens the assistant's turn whether or not a generation prompt is asked.
        template_writes: |llama, _, generation_prompt| {
            if generation_prompt {
                llama
            } else {
                llama + "<|im_start|>assistant<|im_sep|>"
            }
        },
    },
    Family {
        name: "DeepSeek V3",
        model: "library/deepseek-v3:671b",
        bos: "<｜begin▁of▁sentence｜>",
        eos: "<｜end▁of▁sentence｜>",
        adds_bos: true,
        // The template writes the system message with nothing after it.
        template_writes: |llama, system, _| {
            if system {
                llama.replacen("\n\n<｜User｜>", "<｜User｜>", 1)
            } else {
                llama
            }
        },
    },
    Family {
        name: "gpt-oss",
        model: GPT_OSS,
        bos: "<|startoftext|>",
        eos: "<|return|>",
        adds_bos: false,
        template_writes: gpt_oss_writes,
    },
];

/// gpt-oss's template (the Harmony format) opens with a system message of its own (the model's
/// identity, today's date, the reasoning effort and the channels), turns a system message into
/// developer instructions, and writes earlier answers to the `final` channel, ended by
/// `<|end|>`: llama.cpp's renderer writes none of that.
fn gpt_oss_writes(llama: String, system: bool, _generation_prompt: bool) -> String {
    let header = format!(
        "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n\
         Knowledge cutoff: 2024-06\nCurrent date: {}\n\nReasoning: medium\n\n# Valid channels: \
         analysis, commentary, final. Channel must be included for every message.<|end|>",
        chrono::Local::now().format("%Y-%m-%d")
    );
    let mut rest = llama.as_str();
    let mut developer = String::new();
    if system {
        let message = rest
            .strip_prefix("<|start|>system<|message|>")
            .expect("llama.cpp opens with the system message");
        let (instructions, after) = message.split_once("<|end|>").expect("an ended message");
        developer =
            format!("<|start|>developer<|message|># Instructions\n\n{instructions}\n\n<|end|>");
        rest = after;
    }
    let rest = rest
        .replace(
            "<|start|>assistant<|message|>",
            "<|start|>assistant<|channel|>final<|message|>",
        )
        .replace("<|return|>", "<|end|>");
    header + &developer + &rest
}

fn conversations() -> Vec<(&'static str, Vec<ChatMessage>)> {
    let system = ChatMessage::new("system", "You are a helpful assistant.");
    let user = ChatMessage::new("user", "What is the capital of France?");
    let answer = ChatMessage::new("assistant", "The capital of France is Paris.");
    let again = ChatMessage::new("user", "And of Germany?");
    vec![
        ("a question", vec![user.clone()]),
        (
            "a system message and a question",
            vec![system.clone(), user.clone()],
        ),
        (
            "two turns",
            vec![user.clone(), answer.clone(), again.clone()],
        ),
        (
            "two turns after a system message",
            vec![system, user, answer, again],
        ),
    ]
}

#[test]
fn family_templates_render_as_llama_cpp_does() {
    let templates = templates();
    let mut failures = Vec::new();
    for family in FAMILIES {
        let source = templates
            .get(family.model)
            .unwrap_or_else(|| panic!("{}: no template for {}", family.name, family.model));
        let template = ChatTemplate::new(source, family.bos, family.eos, family.adds_bos)
            .unwrap_or_else(|e| panic!("{}: {e}", family.name));
        for (what, messages) in conversations() {
            for add_generation_prompt in [true, false] {
                let at = format!(
                    "{} ({}), {what}, generation prompt {add_generation_prompt}",
                    family.name, family.model
                );
                let system = messages[0].role == "system";
                let ours = template.render(&messages, add_generation_prompt);
                let expected = template
                    .render_with_llama_cpp(&messages, add_generation_prompt)
                    .map(|llama| (family.template_writes)(llama, system, add_generation_prompt));
                match (ours, expected) {
                    (Ok(ours), Ok(expected)) if ours == expected => {}
                    (ours, expected) => failures.push(format!(
                        "{at}:\n  hypura:   {ours:?}\n  expected: {expected:?}"
                    )),
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
