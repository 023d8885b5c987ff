//! `hypura serve`: the OpenAI-compatible endpoints driven over plain HTTP/1.1 — whole and
//! streamed answers, eight concurrent requests each getting what it gets alone, `n` choices
//! each getting what a lone request with its seed gets, a client
//! that goes away, bad requests, the API key, and a graceful stop; the Ollama-compatible
//! endpoints (chat and generate, streamed as JSON lines or whole, tags, show, version,
//! errors), stop strings, `/metrics`; and the official Python clients (openai, ollama).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::{model, tempfile};
use serde_json::{json, Value};

struct Server {
    child: Child,
    address: String,
}

impl Server {
    fn start(extra: &[&str]) -> Self {
        let path = model("SmolLM2-135M-Instruct.Q4_1.gguf");
        let mut child = Command::new(env!("CARGO_BIN_EXE_hypura"))
            .args([
                "serve",
                "-m",
                path.to_str().unwrap(),
                "--port",
                "0",
                "-c",
                "512",
            ])
            .args(["-t", "2", "-P", "4", "--disk-gbps", "1.6"])
            .args(extra)
            .env("XDG_CACHE_HOME", tempfile("cache"))
            .env_remove("HYPURA_API_KEY")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let address = loop {
            let line = lines.next().expect("the server ended").unwrap();
            if let Some(rest) = line.split("on http://").nth(1) {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        // Keep reading stderr so the server never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        Self { child, address }
    }

    /// One request; returns the status and the body (de-chunked).
    fn request(&self, method: &str, path: &str, body: &str, headers: &[&str]) -> (u16, String) {
        let (status, _, body) = self.exchange(method, path, body, headers);
        (status, body)
    }

    /// One request; returns the status, the head (lower case) and the body (de-chunked).
    fn exchange(
        &self,
        method: &str,
        path: &str,
        body: &str,
        headers: &[&str],
    ) -> (u16, String, String) {
        let mut stream = TcpStream::connect(&self.address).unwrap();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            self.address,
            body.len()
        );
        for h in headers {
            head.push_str(h);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body.as_bytes()).unwrap();
        let mut raw = Vec::new();
        let _ = stream.read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .unwrap_or("0")
            .parse()
            .unwrap();
        let head = head.to_ascii_lowercase();
        let body = if head.contains("transfer-encoding: chunked") {
            dechunk(body)
        } else {
            body.to_string()
        };
        (status, head, body)
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let (status, text) = self.request("POST", path, &body.to_string(), &[]);
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    fn get(&self, path: &str) -> (u16, Value) {
        let (status, text) = self.request("GET", path, "", &[]);
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The `data:` payloads of an event stream.
fn events(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

fn chat(question: &str, extra: Value) -> Value {
    let mut body = json!({
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": question},
        ],
        "temperature": 0,
        "max_tokens": 24,
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

#[test]
fn chat_and_completions_whole_and_streamed() {
    let server = Server::start(&[]);
    assert_eq!(server.request("GET", "/health", "", &[]).0, 200);
    let (status, models) = server.request("GET", "/v1/models", "", &[]);
    assert_eq!(status, 200);
    let models: Value = serde_json::from_str(&models).unwrap();
    assert_eq!(models["data"][0]["id"], "SmolLM2-135M-Instruct.Q4_1");

    let (status, whole) = server.post(
        "/v1/chat/completions",
        &chat("What is the capital of France?", json!({})),
    );
    assert_eq!(status, 200, "{whole}");
    let answer = whole["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(whole["choices"][0]["finish_reason"], "stop");
    assert!(whole["usage"]["prompt_tokens"].as_u64().unwrap() > 10);

    let (status, body) = server.request(
        "POST",
        "/v1/chat/completions",
        &chat("What is the capital of France?", json!({"stream": true})).to_string(),
        &[],
    );
    assert_eq!(status, 200);
    let data = events(&body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{body}");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(streamed, answer);
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );

    let (status, text) = server.post(
        "/v1/completions",
        &json!({"prompt": "The capital of France is", "max_tokens": 6, "temperature": 0}),
    );
    assert_eq!(status, 200, "{text}");
    assert_eq!(text["choices"][0]["finish_reason"], "length");
    assert_eq!(text["usage"]["completion_tokens"], 6);
}

#[test]
fn eight_concurrent_requests_each_get_their_own_answer() {
    let server = Server::start(&[]);
    let prompts = [
        "The capital of France is",
        "Once upon a time",
        "def add(a, b):",
        "The three primary colours are",
        "In 1969, the first",
        "A good bread recipe needs",
        "The largest planet is",
        "My favourite book is",
    ];
    let body = |i: usize| json!({"prompt": prompts[i], "max_tokens": 12, "temperature": 0.9, "seed": 100 + i});
    let alone: Vec<Value> = (0..8)
        .map(|i| server.post("/v1/completions", &body(i)).1)
        .collect();
    let together: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let server = &server;
                s.spawn(move || server.post("/v1/completions", &body(i)).1)
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for i in 0..8 {
        assert_eq!(
            together[i]["choices"][0]["text"], alone[i]["choices"][0]["text"],
            "request {i}: {} vs {}",
            together[i], alone[i]
        );
    }
}

#[test]
fn n_choices_are_the_lone_answers_with_the_seed_counted_up() {
    let server = Server::start(&[]);
    let body = |seed: u64, extra: Value| {
        let mut body = json!({"prompt": "Once upon a time", "max_tokens": 10, "temperature": 0.9, "seed": seed});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let lone: Vec<String> = (0..3)
        .map(|i| {
            let (status, answer) = server.post("/v1/completions", &body(7 + i, json!({})));
            assert_eq!(status, 200, "{answer}");
            answer["choices"][0]["text"].as_str().unwrap().to_string()
        })
        .collect();
    assert!(lone[0] != lone[1] || lone[1] != lone[2], "{lone:?}");
    let (status, three) = server.post("/v1/completions", &body(7, json!({"n": 3})));
    assert_eq!(status, 200, "{three}");
    let choices = three["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3, "{three}");
    for (i, choice) in choices.iter().enumerate() {
        assert_eq!(choice["index"], i);
        assert_eq!(choice["text"], lone[i], "choice {i}");
    }
    assert_eq!(three["usage"]["completion_tokens"], 30);

    // Streamed: each choice's pieces, told apart by their index, add up to its answer.
    let (status, stream) = server.request(
        "POST",
        "/v1/completions",
        &body(7, json!({"n": 3, "stream": true})).to_string(),
        &[],
    );
    assert_eq!(status, 200);
    let data = events(&stream);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{stream}");
    let mut streamed = vec![String::new(); 3];
    for chunk in &data[..data.len() - 1] {
        let chunk: Value = serde_json::from_str(chunk).unwrap();
        let choice = &chunk["choices"][0];
        streamed[choice["index"].as_u64().unwrap() as usize] += choice["text"].as_str().unwrap();
    }
    assert_eq!(streamed, lone);

    for n in [0, 17] {
        let (status, error) = server.post("/v1/completions", &body(7, json!({"n": n})));
        assert_eq!(status, 400, "n = {n}: {error}");
        assert!(
            error["error"]["message"].as_str().unwrap().contains("'n'"),
            "{error}"
        );
    }
}

#[test]
fn bad_requests_get_json_errors_and_a_dropped_client_frees_its_place() {
    let server = Server::start(&[]);
    let cases: Vec<(&str, String, u16)> = vec![
        ("/v1/chat/completions", "{not json".into(), 400),
        (
            "/v1/chat/completions",
            json!({"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}).to_string(),
            404,
        ),
        (
            "/v1/chat/completions",
            json!({"messages": []}).to_string(),
            400,
        ),
        (
            "/v1/completions",
            json!({"prompt": "x", "temperature": -1}).to_string(),
            400,
        ),
        ("/v1/completions", "x".repeat(2 << 20), 413),
        ("/v1/nothing", "{}".into(), 404),
    ];
    for (path, body, expected) in cases {
        let (status, text) = server.request("POST", path, &body, &[]);
        assert_eq!(
            status,
            expected,
            "{path} {}: {text}",
            &body[..body.len().min(60)]
        );
        let error: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{text}"));
        assert!(error["error"]["message"].is_string(), "{text}");
    }
    // Four long streams, read a little, then dropped: their sequences must come free.
    for _ in 0..4 {
        let mut stream = TcpStream::connect(&server.address).unwrap();
        let body =
            json!({"prompt": "Once upon a time", "max_tokens": 400, "stream": true}).to_string();
        write!(
            stream,
            "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut first = [0u8; 64];
        let _ = stream.read(&mut first).unwrap();
    }
    // The engine cancels them when it notices (between steps); a hang guard, not a timing.
    let mut cancelled = 0;
    for _ in 0..600 {
        let (_, health) = server.request("GET", "/health", "", &[]);
        let health: Value = serde_json::from_str(&health).unwrap();
        cancelled = health["requests_cancelled"].as_u64().unwrap();
        if cancelled == 4 {
            assert_eq!(health["requests_running"], 0, "{health}");
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        cancelled, 4,
        "the dropped clients' requests were not cancelled"
    );
    let (status, text) = server.post(
        "/v1/completions",
        &json!({"prompt": "The capital of France is", "max_tokens": 4, "temperature": 0}),
    );
    assert_eq!(status, 200, "{text}");
}

#[test]
fn the_api_key_is_required_and_a_signal_stops_the_server() {
    let mut server = Server::start(&["--api-key", "s3cret"]);
    let body = json!({"prompt": "Hi", "max_tokens": 2}).to_string();
    assert_eq!(server.request("POST", "/v1/completions", &body, &[]).0, 401);
    let wrong = server.request(
        "POST",
        "/v1/completions",
        &body,
        &["Authorization: Bearer nope"],
    );
    assert_eq!(wrong.0, 401);
    let right = server.request(
        "POST",
        "/v1/completions",
        &body,
        &["Authorization: Bearer s3cret"],
    );
    assert_eq!(right.0, 200, "{}", right.1);
    assert_eq!(server.request("GET", "/health", "", &[]).0, 200);
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) };
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

const MODEL: &str = "SmolLM2-135M-Instruct.Q4_1";

/// The objects of a JSON-lines body.
fn json_lines(body: &str) -> Vec<Value> {
    body.lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

/// An Ollama request to `path`; `extra` is merged into the body.
fn ollama_body(base: Value, extra: Value) -> Value {
    let mut body = base;
    body["model"] = json!(MODEL);
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

fn ollama_chat(extra: Value) -> Value {
    ollama_body(
        json!({
            "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "What is the capital of France?"},
            ],
            "options": {"temperature": 0.7, "seed": 3, "num_predict": 24},
        }),
        extra,
    )
}

/// Checks an Ollama stream: text objects with `done: false`, then one with `done: true`
/// and the counts; returns the text and the last object.
fn ollama_stream(lines: &[Value], key: &str) -> (String, Value) {
    let (last, pieces) = lines.split_last().expect("no lines");
    let mut text = String::new();
    for piece in pieces {
        assert_eq!(piece["done"], false, "{piece}");
        assert_eq!(piece["model"], MODEL);
        assert!(piece["created_at"].is_string(), "{piece}");
        let part = if key == "message" {
            assert_eq!(piece["message"]["role"], "assistant");
            &piece["message"]["content"]
        } else {
            &piece[key]
        };
        text.push_str(part.as_str().unwrap());
    }
    assert_eq!(last["done"], true, "{last}");
    (text, last.clone())
}

/// The text of an Ollama whole answer, after checking its counts and durations.
fn ollama_whole(answer: &Value, key: &str) -> String {
    assert_eq!(answer["done"], true, "{answer}");
    for field in [
        "total_duration",
        "prompt_eval_count",
        "prompt_eval_duration",
        "eval_count",
        "eval_duration",
    ] {
        assert!(answer[field].as_u64().unwrap() > 0, "{field}: {answer}");
    }
    assert!(answer["load_duration"].is_u64(), "{answer}");
    let text = if key == "message" {
        &answer["message"]["content"]
    } else {
        &answer[key]
    };
    text.as_str().unwrap().to_string()
}

#[test]
fn ollama_chat_and_generate_streamed_and_whole() {
    let server = Server::start(&[]);
    // /api/chat streams JSON lines by default.
    let (status, head, body) = server.exchange(
        "POST",
        "/api/chat",
        &ollama_chat(json!({})).to_string(),
        &[],
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        head.contains("content-type: application/x-ndjson"),
        "{head}"
    );
    let lines = json_lines(&body);
    assert!(lines.len() > 2, "{body}");
    let (streamed, last) = ollama_stream(&lines, "message");
    assert_eq!(ollama_whole(&last, "message"), "");
    assert!(["stop", "length"].contains(&last["done_reason"].as_str().unwrap()));
    assert!(last["prompt_eval_count"].as_u64().unwrap() > 10, "{last}");
    // One line per piece of text; a token may bring none (a character split over tokens).
    assert!(
        last["eval_count"].as_u64().unwrap() >= lines.len() as u64 - 1,
        "{last}"
    );

    // Whole, with the model named with Ollama's tag: the same answer.
    let (status, whole) = server.post(
        "/api/chat",
        &ollama_chat(json!({"stream": false, "model": format!("{MODEL}:latest")})),
    );
    assert_eq!(status, 200, "{whole}");
    let answer = ollama_whole(&whole, "message");
    assert_eq!(answer, streamed);
    assert_eq!(whole["message"]["role"], "assistant");
    // The same seeded request through the OpenAI endpoint gets the same answer.
    let (_, openai) = server.post(
        "/v1/chat/completions",
        &chat(
            "What is the capital of France?",
            json!({"temperature": 0.7, "seed": 3, "max_tokens": 24}),
        ),
    );
    assert_eq!(openai["choices"][0]["message"]["content"], answer.as_str());

    // /api/generate renders the prompt with the chat template, as Ollama does...
    let (status, generated) = server.post(
        "/api/generate",
        &ollama_body(
            json!({"system": "You are a helpful assistant.", "prompt": "What is the capital of France?", "stream": false}),
            json!({"options": {"temperature": 0.7, "seed": 3, "num_predict": 24}}),
        ),
    );
    assert_eq!(status, 200, "{generated}");
    assert_eq!(ollama_whole(&generated, "response"), answer);
    // ...and sends a raw prompt as it is: what /v1/completions gets, streamed or not.
    let raw = |stream: bool| {
        ollama_body(
            json!({"prompt": "The capital of France is", "raw": true, "stream": stream}),
            json!({"options": {"temperature": 0, "num_predict": 8, "num_ctx": 4096}}),
        )
    };
    let (_, completion) = server.post(
        "/v1/completions",
        &json!({"prompt": "The capital of France is", "max_tokens": 8, "temperature": 0}),
    );
    let (status, whole) = server.post("/api/generate", &raw(false));
    assert_eq!(status, 200, "{whole}");
    assert_eq!(
        ollama_whole(&whole, "response"),
        completion["choices"][0]["text"].as_str().unwrap()
    );
    assert_eq!(whole["done_reason"], "length");
    assert_eq!(whole["eval_count"], 8);
    let (status, body) = server.request("POST", "/api/generate", &raw(true).to_string(), &[]);
    assert_eq!(status, 200, "{body}");
    let (streamed, last) = ollama_stream(&json_lines(&body), "response");
    assert_eq!(streamed, completion["choices"][0]["text"].as_str().unwrap());
    assert_eq!(last["done_reason"], "length");

    // Nothing to generate: Ollama's "loaded" answer.
    let (status, loaded) = server.post("/api/generate", &ollama_body(json!({}), json!({})));
    assert_eq!(
        (status, &loaded["done_reason"]),
        (200, &json!("load")),
        "{loaded}"
    );
}

#[test]
fn ollama_tags_show_version_and_errors() {
    let server = Server::start(&[]);
    let (status, tags) = server.get("/api/tags");
    assert_eq!(status, 200, "{tags}");
    let listed = &tags["models"][0];
    assert_eq!(tags["models"].as_array().unwrap().len(), 1);
    assert_eq!(listed["name"], MODEL);
    assert_eq!(listed["model"], MODEL);
    let file_bytes = std::fs::metadata(model("SmolLM2-135M-Instruct.Q4_1.gguf"))
        .unwrap()
        .len();
    assert_eq!(listed["size"], file_bytes);
    assert_eq!(listed["digest"].as_str().unwrap().len(), 16, "{listed}");
    assert!(listed["modified_at"].as_str().unwrap().contains('T'));
    let details = json!({
        "parent_model": "",
        "format": "gguf",
        "family": "llama",
        "families": ["llama"],
        "parameter_size": "134.52M",
        "quantization_level": "Q4_1",
    });
    assert_eq!(listed["details"], details);

    for request in [
        json!({"model": MODEL}),
        json!({"name": format!("{MODEL}:latest")}),
    ] {
        let (status, shown) = server.post("/api/show", &request);
        assert_eq!(status, 200, "{shown}");
        assert_eq!(shown["details"], details);
        assert_eq!(shown["model_info"]["general.architecture"], "llama");
        assert_eq!(shown["model_info"]["general.parameter_count"], 134_515_008);
        assert_eq!(shown["model_info"]["llama.block_count"], 30);
        assert!(shown["template"].as_str().unwrap().contains("<|im_start|>"));
        let modelfile = shown["modelfile"].as_str().unwrap();
        assert!(
            modelfile.contains("FROM SmolLM2-135M-Instruct.Q4_1.gguf"),
            "{modelfile}"
        );
        assert!(shown["parameters"]
            .as_str()
            .unwrap()
            .contains("temperature 0.8"));
    }
    let (status, version) = server.get("/api/version");
    assert_eq!(status, 200);
    assert!(
        !version["version"].as_str().unwrap().is_empty(),
        "{version}"
    );

    // Errors are Ollama's: a 4xx status and {"error": "..."}.
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "/api/show",
            json!({"model": "llama3"}).to_string(),
            404,
            "model 'llama3' not found",
        ),
        (
            "/api/chat",
            ollama_chat(json!({"model": "llama3"})).to_string(),
            404,
            "not found",
        ),
        ("/api/chat", "{not json".into(), 400, "invalid JSON"),
        (
            "/api/generate",
            json!({"prompt": "Hi"}).to_string(),
            400,
            "model is required",
        ),
        (
            "/api/chat",
            ollama_chat(
                json!({"messages": [{"role": "user", "content": "hi", "images": ["aGk="]}]}),
            )
            .to_string(),
            400,
            "images",
        ),
        (
            "/api/generate",
            ollama_body(json!({"prompt": "Hi", "format": "json"}), json!({})).to_string(),
            400,
            "format",
        ),
        (
            "/api/generate",
            ollama_body(
                json!({"prompt": "Hi", "options": {"temperature": -1}}),
                json!({}),
            )
            .to_string(),
            400,
            "temperature",
        ),
        (
            "/api/generate",
            ollama_body(
                json!({"prompt": "Hi", "options": {"stop": [""]}}),
                json!({}),
            )
            .to_string(),
            400,
            "stop string",
        ),
    ];
    for (path, body, expected, says) in cases {
        let (status, text) = server.request("POST", path, &body, &[]);
        assert_eq!(status, expected, "{path} {body}: {text}");
        let error: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{text}"));
        let message = error["error"].as_str().unwrap_or_else(|| panic!("{text}"));
        assert!(message.contains(says), "{path}: {message}");
    }
}

#[test]
fn stop_strings_end_answers_just_before_them() {
    let server = Server::start(&[]);
    let prompt = "Once upon a time, in a small village,";
    let body = |extra: Value| {
        let mut body = json!({"prompt": prompt, "max_tokens": 30, "temperature": 0.9, "seed": 5});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let (status, plain) = server.post("/v1/completions", &body(json!({})));
    assert_eq!(status, 200, "{plain}");
    assert_eq!(plain["choices"][0]["finish_reason"], "length");
    let whole = plain["choices"][0]["text"].as_str().unwrap().to_string();
    // A stop string of three characters from the middle of the answer.
    let chars: Vec<(usize, char)> = whole.char_indices().collect();
    let from = chars[chars.len() / 2].0;
    let to = chars.get(chars.len() / 2 + 3).map_or(whole.len(), |c| c.0);
    let stop = whole[from..to].to_string();
    let before = &whole[..whole.find(&stop).unwrap()];

    // One string, whole.
    let (status, stopped) = server.post("/v1/completions", &body(json!({"stop": stop})));
    assert_eq!(status, 200, "{stopped}");
    assert_eq!(
        stopped["choices"][0]["text"], before,
        "stop {stop:?} in {whole:?}"
    );
    assert_eq!(stopped["choices"][0]["finish_reason"], "stop");
    assert!(stopped["usage"]["completion_tokens"].as_u64().unwrap() < 30);

    // An array, streamed: no piece holds the stop string, and they add up to the same.
    let (status, text) = server.request(
        "POST",
        "/v1/completions",
        &body(json!({"stop": ["<never>", stop], "stream": true})).to_string(),
        &[],
    );
    assert_eq!(status, 200, "{text}");
    let data = events(&text);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{text}");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let pieces: Vec<&str> = chunks
        .iter()
        .map(|c| c["choices"][0]["text"].as_str().unwrap())
        .collect();
    assert!(pieces.iter().all(|p| !p.contains(&stop)), "{pieces:?}");
    assert_eq!(pieces.concat(), before);
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );

    // Ollama's options.stop, on the raw prompt: the same.
    let (status, ollama) = server.post(
        "/api/generate",
        &ollama_body(
            json!({"prompt": prompt, "raw": true, "stream": false}),
            json!({"options": {"num_predict": 30, "temperature": 0.9, "seed": 5, "stop": [stop]}}),
        ),
    );
    assert_eq!(status, 200, "{ollama}");
    assert_eq!(ollama["response"], before);
    assert_eq!(ollama["done_reason"], "stop");

    // Bad stop strings are refused.
    for bad in [
        json!(5),
        json!([1]),
        json!(vec!["x"; 17]),
        json!("y".repeat(257)),
    ] {
        let (status, error) = server.post("/v1/completions", &body(json!({"stop": bad})));
        assert_eq!(status, 400, "{bad}: {error}");
    }
}

/// Prometheus text: each sample's name (labels included) and value.
fn samples(text: &str) -> std::collections::HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("{l:?}"));
            (
                name.to_string(),
                value.parse().unwrap_or_else(|_| panic!("{l:?}")),
            )
        })
        .collect()
}

#[test]
fn metrics_count_requests_tokens_and_reads() {
    // Half the weights stream from the file, so reads move too.
    let server = Server::start(&["--weights-budget", "50%"]);
    let scrape = || {
        let (status, head, body) = server.exchange("GET", "/metrics", "", &[]);
        assert_eq!(status, 200, "{body}");
        assert!(
            head.contains("content-type: text/plain; version=0.0.4"),
            "{head}"
        );
        samples(&body)
    };
    let before = scrape();
    assert_eq!(before["hypura_requests_finished_total"], 0.0);
    assert_eq!(before["hypura_sequences"], 4.0);
    assert!(before
        .keys()
        .any(|k| k.starts_with("hypura_model_info{model=\"SmolLM2-135M-Instruct.Q4_1\"")));
    assert!(before["hypura_streamed_bytes_per_token"] > 0.0);
    assert!(before["hypura_resident_bytes"] < before["hypura_model_bytes"]);
    assert_eq!(before["hypura_gpu_resident_bytes"], 0.0);
    let (status, answer) = server.post(
        "/v1/completions",
        &json!({"prompt": "The capital of France is", "max_tokens": 4, "temperature": 0}),
    );
    assert_eq!(status, 200, "{answer}");
    let after = scrape();
    let moved = |name: &str| after[name] - before[name];
    assert_eq!(moved("hypura_requests_finished_total"), 1.0);
    assert_eq!(moved("hypura_generated_tokens_total"), 4.0);
    assert_eq!(
        moved("hypura_prompt_tokens_total"),
        answer["usage"]["prompt_tokens"].as_f64().unwrap()
    );
    // The prompt in one step, then three more: each reads the streamed weights.
    assert_eq!(
        moved("hypura_decoded_tokens_total"),
        answer["usage"]["prompt_tokens"].as_f64().unwrap() + 3.0
    );
    assert!(
        moved("hypura_file_read_bytes_total") >= 4.0 * after["hypura_streamed_bytes_per_token"],
        "{} bytes read",
        moved("hypura_file_read_bytes_total")
    );
    assert_eq!(after["hypura_requests_running"], 0.0);
}

#[test]
fn the_official_python_clients_work() {
    // scripts/test.sh installs pinned versions into target/python-clients.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut python_path = std::ffi::OsString::from(root.join("target/python-clients"));
    if let Some(more) = std::env::var_os("PYTHONPATH") {
        python_path.push(":");
        python_path.push(more);
    }
    let python = || {
        let mut c = Command::new("python3");
        c.env("PYTHONPATH", &python_path);
        c
    };
    let probe = python().args(["-c", "import openai, ollama"]).output();
    assert!(
        probe.as_ref().is_ok_and(|o| o.status.success()),
        "the official Python clients are missing: pip install openai ollama \
         (scripts/test.sh installs the pinned versions into target/python-clients): {probe:?}"
    );
    let server = Server::start(&["--api-key", "s3cret"]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/clients.py");
    let out = python()
        .arg(script)
        .args([&format!("http://{}", server.address), MODEL, "s3cret"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("all checks passed"), "{stdout}");
}
