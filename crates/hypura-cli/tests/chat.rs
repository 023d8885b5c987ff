//! `hypura chat` (the model's own template, one question or a conversation on stdin) and the
//! prompt flags llama.cpp users type (`-m -p -f -n -c -t -s`, a prompt piped in).

mod common;

use common::{hypura, hypura_with_stdin, model, tempfile};

const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const SYSTEM: &str = "You are a helpful assistant.";
const QUESTION: &str = "What is the capital of France?";

fn chat_args<'a>(path: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "chat",
        "-m",
        path,
        "--system",
        SYSTEM,
        "--temp",
        "0",
        "-n",
        "24",
        "-t",
        "2",
        "-c",
        "512",
        "--disk-gbps",
        "1.6",
    ];
    args.extend_from_slice(extra);
    args
}

#[test]
fn smollm2_answers_the_question_with_its_own_template() {
    let path = model(SMOLLM2);
    let path = path.to_str().unwrap();
    let resident = hypura(&chat_args(path, &["-p", QUESTION]));
    assert_eq!(resident.code, 0, "{}", resident.stderr);
    assert!(resident.stdout.contains("Paris"), "{:?}", resident.stdout);
    // Streamed from disk at half the weights: the same answer.
    let streamed = hypura(&chat_args(path, &["-p", QUESTION, "--ram-budget", "50%"]));
    assert_eq!(streamed.code, 0, "{}", streamed.stderr);
    assert_eq!(streamed.stdout, resident.stdout);
    // The question from a file.
    let file = tempfile("question.txt");
    std::fs::write(&file, QUESTION).unwrap();
    let from_file = hypura(&chat_args(path, &["-f", file.to_str().unwrap()]));
    assert_eq!(from_file.stdout, resident.stdout, "{}", from_file.stderr);
    let _ = std::fs::remove_file(file);
}

#[test]
fn a_conversation_on_stdin_carries_its_context_over() {
    let path = model(SMOLLM2);
    let stats = tempfile("chat-stats.json");
    let out = hypura_with_stdin(
        &chat_args(
            path.to_str().unwrap(),
            &["--stats-json", stats.to_str().unwrap()],
        ),
        &format!("{QUESTION}\n\nAnd what is the capital of Italy?\n"),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let answers: Vec<&str> = out.stdout.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(answers.len(), 2, "{:?}", out.stdout);
    assert!(answers[0].contains("Paris"), "{:?}", answers[0]);
    // The second turn decoded only what the first had not.
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    let cached = s["prompt_tokens_cached"].as_u64().unwrap();
    let total = s["prompt_tokens"].as_u64().unwrap();
    assert!(cached > 20 && cached < total, "{cached} of {total} cached");
    let _ = std::fs::remove_file(stats);
}

#[test]
fn a_model_without_a_chat_template_gets_one_line() {
    let path = model("gemma-3-270m-q4_k_m.gguf");
    let out = hypura(&chat_args(path.to_str().unwrap(), &["-p", QUESTION]));
    assert_ne!(out.code, 0);
    let last = out
        .stderr
        .trim()
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    assert!(
        last.contains("gemma-3-270m-q4_k_m.gguf: the model has no chat template"),
        "{}",
        out.stderr
    );
}

#[test]
fn run_takes_llama_cpp_short_flags_and_a_piped_prompt() {
    let path = model(SMOLLM2);
    let path = path.to_str().unwrap();
    let base = [
        "run",
        "-m",
        path,
        "-n",
        "6",
        "-t",
        "2",
        "-c",
        "256",
        "-s",
        "7",
        "--temp",
        "1",
        "--disk-gbps",
        "1.6",
    ];
    let with_flag = hypura(&[&base[..], &["-p", "The capital of France is"]].concat());
    assert_eq!(with_flag.code, 0, "{}", with_flag.stderr);
    assert!(!with_flag.stdout.trim().is_empty());
    let piped = hypura_with_stdin(&base, "The capital of France is");
    assert_eq!(piped.code, 0, "{}", piped.stderr);
    assert_eq!(piped.stdout, with_flag.stdout);
    let dash = hypura_with_stdin(
        &[&base[..], &["-f", "-"]].concat(),
        "The capital of France is",
    );
    assert_eq!(dash.stdout, with_flag.stdout, "{}", dash.stderr);
    // Nothing piped, no flag: one line saying how to give a prompt.
    let none = hypura_with_stdin(&base, "");
    assert_ne!(none.code, 0);
    assert!(
        none.stderr.contains("no prompt: give -p TEXT or -f FILE"),
        "{}",
        none.stderr
    );
}
