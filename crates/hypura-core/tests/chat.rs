//! Chat templates on the test models: rendered as llama.cpp's own renderer renders them, and
//! a conversation's second turn, which decodes only what the first did not, gives what a
//! fresh start on the whole conversation gives.

use std::ops::ControlFlow;

mod common;
use common::{model_path, GEMMA3, SMOLLM2};

use hypura_core::{Budget, ChatMessage, GenerateOptions, LoadOptions, Model};

fn load(name: &str, budget: Budget) -> Model {
    let options = LoadOptions::new(model_path(name))
        .budget(budget)
        .context_length(1024)
        .threads(2)
        .expert_profiles(None);
    Model::load(&options).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn a_model_without_a_template_says_so() {
    let model = load(GEMMA3, Budget::AllWeights);
    let e = model.chat_template().unwrap_err().to_string();
    assert_eq!(
        e,
        "the model has no chat template (tokenizer.chat_template)"
    );
}

#[test]
fn templates_render_as_llama_cpp_does() {
    let system = ChatMessage::new("system", "You are a helpful assistant.");
    let user = ChatMessage::new("user", "What is the capital of France?");
    let answer = ChatMessage::new("assistant", "The capital of France is Paris.");
    let again = ChatMessage::new("user", "And of Germany?");
    let with_system = [
        vec![system.clone(), user.clone()],
        vec![system, user.clone(), answer, again],
    ];
    // SmolLM2's template writes its own system message when the conversation has none;
    // llama.cpp's built-in ChatML renderer does not (its Jinja engine, like transformers,
    // does): compared with a system message only, and checked for the default without.
    // (The other test model, gemma-3-270m, has no chat template in its file.)
    for (name, compared) in [(SMOLLM2, &with_system[..])] {
        let model = load(name, Budget::AllWeights);
        let template = model.chat_template().unwrap();
        for messages in compared {
            for add_generation_prompt in [true, false] {
                let ours = template.render(messages, add_generation_prompt).unwrap();
                let llama = template
                    .render_with_llama_cpp(messages, add_generation_prompt)
                    .unwrap();
                assert_eq!(
                    ours,
                    llama,
                    "{name}, {} messages, generation prompt {add_generation_prompt}",
                    messages.len()
                );
            }
        }
    }
    let model = load(SMOLLM2, Budget::AllWeights);
    let ours = model
        .chat_template()
        .unwrap()
        .render(&[user], true)
        .unwrap();
    assert!(
        ours.starts_with("<|im_start|>system\nYou are a helpful AI assistant named SmolLM"),
        "{ours:?}"
    );
}

/// Greedy answer text and the statistics of one chat turn.
fn answer(model: &mut Model, messages: &[ChatMessage]) -> (String, hypura_core::GenerationStats) {
    let template = model.chat_template().unwrap();
    let request = GenerateOptions::new("").max_tokens(16).temperature(0.0);
    let mut text = String::new();
    let stats = model
        .chat(&template, messages, &request, |piece| {
            text.push_str(piece);
            ControlFlow::Continue(())
        })
        .unwrap();
    (text, stats)
}

#[test]
fn a_second_turn_decodes_only_what_is_new_and_matches_a_fresh_start() {
    // Streamed (half the weights), so the reuse is checked where hypura reads from disk.
    let mut model = load(SMOLLM2, Budget::WeightPercent(50.0));
    let mut messages = vec![
        ChatMessage::new("system", "You are a helpful assistant."),
        ChatMessage::new("user", "What is the capital of France?"),
    ];
    let (first, stats) = answer(&mut model, &messages);
    assert!(first.contains("Paris"), "first answer: {first:?}");
    assert_eq!(stats.prompt_tokens_cached, 0);
    messages.push(ChatMessage::new("assistant", first.trim()));
    messages.push(ChatMessage::new(
        "user",
        "And what is the capital of Italy?",
    ));
    let (second, continued) = answer(&mut model, &messages);
    assert!(
        continued.prompt_tokens_cached >= stats.prompt_tokens,
        "the second turn reused {} of its {} prompt tokens; the first prompt had {}",
        continued.prompt_tokens_cached,
        continued.prompt_tokens,
        stats.prompt_tokens
    );
    model.clear();
    let (fresh_text, fresh) = answer(&mut model, &messages);
    assert_eq!(fresh.prompt_tokens_cached, 0);
    assert_eq!(second, fresh_text, "continued and fresh answers differ");
    assert_eq!(continued.logits_digest, fresh.logits_digest);
}
