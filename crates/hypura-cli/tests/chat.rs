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
    let streamed = hypura(&chat_args(
        path,
        &["-p", QUESTION, "--weights-budget", "50%"],
    ));
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
    // A prompt file that is not one: one line naming it.
    for (file, message) in [
        (
            "/nonexistent/prompt.txt",
            "cannot read the prompt from /nonexistent/prompt.txt",
        ),
        ("/", "cannot read the prompt from /"),
    ] {
        let out = hypura(&[&base[..], &["-f", file]].concat());
        assert_ne!(out.code, 0);
        assert!(out.stderr.contains(message), "{file}: {}", out.stderr);
    }
    // Nothing piped, no flag: one line saying how to give a prompt.
    let none = hypura_with_stdin(&base, "");
    assert_ne!(none.code, 0);
    assert!(
        none.stderr.contains("no prompt: give -p TEXT or -f FILE"),
        "{}",
        none.stderr
    );
}

#[test]
fn llama_cpp_sampler_settings_apply_and_reproduce() {
    let path = model(SMOLLM2);
    let path = path.to_str().unwrap();
    let run = |extra: &[&str]| {
        let base = [
            "run",
            "-m",
            path,
            "-p",
            "The list of colors: red, green,",
            "-n",
            "24",
            "-t",
            "2",
            "-c",
            "256",
            "--disk-gbps",
            "1.6",
        ];
        let out = hypura(&[&base[..], extra].concat());
        assert_eq!(out.code, 0, "{extra:?}: {}", out.stderr);
        out.stdout
    };
    // Greedy, with and without the repetition penalty: the penalty changes the text.
    assert_ne!(
        run(&["--temp", "0"]),
        run(&["--temp", "0", "--repeat-penalty", "1.5"])
    );
    // Seeded sampling through the whole chain: the same text twice, and the same in stock
    // llama.cpp and streamed at half the weights.
    let chain = [
        "--temp",
        "0.9",
        "--top-k",
        "20",
        "--top-p",
        "0.9",
        "--min-p",
        "0.02",
        "--repeat-penalty",
        "1.2",
        "--presence-penalty",
        "0.3",
        "--frequency-penalty",
        "0.2",
    ];
    let seeded = [&chain[..], &["-s", "3"]].concat();
    let first = run(&seeded);
    assert_eq!(run(&seeded), first);
    assert_eq!(run(&[&seeded[..], &["--baseline"]].concat()), first);
    assert_eq!(
        run(&[&seeded[..], &["--weights-budget", "50%"]].concat()),
        first
    );
    assert_ne!(
        run(&[&chain[..], &["-s", "4"]].concat()),
        first,
        "the seed is not used"
    );
    // Out of range: one line, before loading.
    for (flag, value, message) in [
        ("--min-p", "1.5", "--min-p must be in [0, 1]"),
        (
            "--repeat-penalty",
            "0",
            "--repeat-penalty must be more than 0",
        ),
        ("--top-p", "0", "--top-p must be in (0, 1]"),
        (
            "--repeat-last-n=-1",
            "",
            "--repeat-last-n must be 0 or more",
        ),
    ] {
        let args: Vec<&str> = ["run", "-m", path, "-p", "x", flag, value]
            .into_iter()
            .filter(|a| !a.is_empty())
            .collect();
        let out = hypura(&args);
        assert_ne!(out.code, 0);
        assert!(
            out.stderr.contains(message),
            "{flag} {value}: {}",
            out.stderr
        );
        assert!(
            !out.stderr.contains("loading"),
            "{flag} {value}: loaded first"
        );
    }
}

#[test]
fn rust_log_is_honoured() {
    let path = model(SMOLLM2);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hypura"))
        .args(chat_args(path.to_str().unwrap(), &["-p", QUESTION]))
        .env("XDG_CACHE_HOME", tempfile("cache"))
        .env("RUST_LOG", "hypura_core=debug")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("chat prompt: \"<|im_start|>system\\nYou are a helpful assistant."),
        "{stderr}"
    );
}
