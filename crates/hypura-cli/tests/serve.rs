//! `hypura serve`: the OpenAI-compatible endpoints driven over plain HTTP/1.1 — whole and
//! streamed answers, eight concurrent requests each getting what it gets alone, a client
//! that goes away, bad requests, the API key, and a graceful stop.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
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
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_string()
        };
        (status, body)
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let (status, text) = self.request("POST", path, &body.to_string(), &[]);
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
    assert!(answer.contains("Paris"), "{answer:?}");
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
