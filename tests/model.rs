//! `quire model pull|list|verify` against a stub hub on 127.0.0.1 that serves the tiny model with
//! the Hugging Face API's shape (model info with LFS sha256, `resolve/{commit}/{file}` with
//! ranges): only the chosen dtype is fetched, a dropped connection and an interrupted run resume
//! with ranged requests, a hash mismatch is refused, verify catches a flipped byte, list shows
//! the model and its contract check. Nothing leaves 127.0.0.1.

use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

const REPO: &str = "tiny-org/tiny-gemma4-ONNX";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

fn tiny() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/models/tiny-gemma4")
}

fn sha256(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// One request the stub saw.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    range: Option<String>,
    auth: Option<String>,
}

struct StubHub {
    endpoint: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// Files of the fake repository: the tiny model's side files and graphs, plus an audio graph
/// quire never needs. `.onnx*` files are LFS files (sha256 listed).
fn repo_files() -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for name in [
        "config.json",
        "generation_config.json",
        "processor_config.json",
        "preprocessor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
    ] {
        files.insert(name.to_string(), std::fs::read(tiny().join(name)).unwrap());
    }
    for e in std::fs::read_dir(tiny().join("onnx")).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        files.insert(format!("onnx/{name}"), std::fs::read(e.path()).unwrap());
    }
    files.insert(
        "onnx/audio_encoder_q4f16.onnx".into(),
        b"not needed".to_vec(),
    );
    files.insert(".gitattributes".into(), b"*.onnx* filter=lfs\n".to_vec());
    files
}

/// Serves `files`; `lie_about` gets a wrong sha256 in the listing; the first full request of
/// `drop_once` is cut after half the file.
fn start_hub(
    files: BTreeMap<String, Vec<u8>>,
    lie_about: Option<&str>,
    drop_once: Option<&str>,
) -> StubHub {
    start_hub_redirecting(files, lie_about, drop_once, None)
}

/// As [`start_hub`], and downloads of `.onnx_data` files answer with a redirect to the same
/// path on `storage` (as the hub sends LFS downloads to its storage hosts).
fn start_hub_redirecting(
    files: BTreeMap<String, Vec<u8>>,
    lie_about: Option<&str>,
    drop_once: Option<&str>,
    storage: Option<String>,
) -> StubHub {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let files = Arc::new(files);
    let lie_about = lie_about.map(str::to_string);
    let dropped = Arc::new(Mutex::new(
        drop_once
            .map(str::to_string)
            .into_iter()
            .collect::<HashSet<_>>(),
    ));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let (files, lie, dropped, log, storage) = (
                files.clone(),
                lie_about.clone(),
                dropped.clone(),
                log.clone(),
                storage.clone(),
            );
            std::thread::spawn(move || {
                let storage = storage.as_deref();
                serve(stream, &files, lie.as_deref(), &dropped, &log, storage)
            });
        }
    });
    StubHub { endpoint, seen }
}

fn serve(
    mut stream: TcpStream,
    files: &BTreeMap<String, Vec<u8>>,
    lie_about: Option<&str>,
    drop_once: &Mutex<HashSet<String>>,
    log: &Mutex<Vec<Seen>>,
    storage: Option<&str>,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let (mut range, mut auth) = (None, None);
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap() == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.trim_end().split_once(':') {
            match k.to_ascii_lowercase().as_str() {
                "range" => range = Some(v.trim().to_string()),
                "authorization" => auth = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    log.lock().unwrap().push(Seen {
        path: target.clone(),
        range: range.clone(),
        auth,
    });
    let info = format!("/api/models/{REPO}/revision/main?blobs=true");
    let prefix = format!("/{REPO}/resolve/{COMMIT}/");
    if target == info {
        let siblings: Vec<serde_json::Value> = files
            .iter()
            .map(|(p, b)| {
                let mut s = serde_json::json!({"rfilename": p, "size": b.len()});
                if p.contains(".onnx") {
                    let sha = if Some(p.as_str()) == lie_about {
                        sha256(b"something else")
                    } else {
                        sha256(b)
                    };
                    s["lfs"] =
                        serde_json::json!({"sha256": sha, "size": b.len(), "pointerSize": 134});
                }
                s
            })
            .collect();
        let body = serde_json::json!({"id": REPO, "sha": COMMIT, "siblings": siblings}).to_string();
        respond(&mut stream, "200 OK", &[], body.as_bytes(), None);
    } else if let Some(storage) = storage.filter(|_| target.contains(".onnx_data")) {
        let location = format!("{storage}{target}");
        respond(
            &mut stream,
            "302 Found",
            &[("Location", &location)],
            b"",
            None,
        );
    } else if let Some(file) = target.strip_prefix(&prefix).and_then(|p| files.get(p)) {
        let name = target.strip_prefix(&prefix).unwrap().to_string();
        let from = range
            .as_deref()
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|n| n.parse::<usize>().ok());
        match from {
            Some(from) => {
                let cr = format!("bytes {from}-{}/{}", file.len() - 1, file.len());
                respond(
                    &mut stream,
                    "206 Partial Content",
                    &[("Content-Range", &cr)],
                    &file[from..],
                    None,
                );
            }
            None => {
                let cut = drop_once
                    .lock()
                    .unwrap()
                    .remove(&name)
                    .then_some(file.len() / 2);
                respond(&mut stream, "200 OK", &[], file, cut);
            }
        }
    } else {
        respond(&mut stream, "404 Not Found", &[], b"not found", None);
    }
}

/// Writes a response; with `cut`, only that many body bytes, then the connection is dropped.
fn respond(
    s: &mut TcpStream,
    status: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    cut: Option<usize>,
) {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(&body[..cut.unwrap_or(body.len())]);
    let _ = s.flush();
    let _ = s.shutdown(Shutdown::Both);
}

fn quire(hub: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_quire"));
    for v in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        cmd.env_remove(v);
    }
    let out = cmd
        .env("HF_ENDPOINT", hub)
        .env("HF_TOKEN", "hf_test_token")
        .env_remove("QUIRE_OFFLINE")
        .args(args)
        .output()
        .unwrap();
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for top in std::fs::read_dir(dir).unwrap() {
        let top = top.unwrap();
        let name = top.file_name().to_string_lossy().into_owned();
        if top.file_type().unwrap().is_dir() {
            for e in std::fs::read_dir(top.path()).unwrap() {
                out.push(format!(
                    "{name}/{}",
                    e.unwrap().file_name().to_string_lossy()
                ));
            }
        } else {
            out.push(name);
        }
    }
    out.sort();
    out
}

const SIDE_FILES: [&str; 7] = [
    "chat_template.jinja",
    "config.json",
    "generation_config.json",
    "preprocessor_config.json",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
];

#[test]
fn pull_fetches_only_the_chosen_dtype_resumes_and_verify_catches_changes() {
    let files = repo_files();
    let hub = start_hub(
        files.clone(),
        None,
        Some("onnx/decoder_model_merged_q4f16.onnx_data"),
    );
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("models/tiny");
    // An earlier run was interrupted 1000 bytes into this file.
    let interrupted = "onnx/embed_tokens_q4f16.onnx_data";
    std::fs::create_dir_all(dest.join("onnx")).unwrap();
    std::fs::write(
        dest.join(format!("{interrupted}.part")),
        &files[interrupted][..1000],
    )
    .unwrap();

    let out = quire(
        &hub.endpoint,
        &[
            "model",
            "pull",
            REPO,
            "--dtype",
            "q4f16",
            "--dir",
            dest.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0));

    // Exactly the side files, the q4f16 graphs and the manifest; every byte as served.
    let graphs = [
        "onnx/decoder_model_merged_q4f16.onnx",
        "onnx/decoder_model_merged_q4f16.onnx_data",
        "onnx/embed_tokens_q4f16.onnx",
        "onnx/embed_tokens_q4f16.onnx_data",
        "onnx/vision_encoder_q4f16.onnx",
        "onnx/vision_encoder_q4f16.onnx_data",
    ];
    let mut expected: Vec<String> = SIDE_FILES
        .iter()
        .chain(graphs.iter())
        .map(|s| s.to_string())
        .collect();
    expected.push("quire-manifest.json".into());
    expected.sort();
    assert_eq!(files_under(&dest), expected);
    for f in SIDE_FILES.iter().chain(graphs.iter()) {
        assert_eq!(std::fs::read(dest.join(f)).unwrap(), files[*f], "{f}");
    }

    let seen = hub.seen.lock().unwrap().clone();
    let resolve = |f: &str| -> Vec<Seen> {
        seen.iter()
            .filter(|s| s.path == format!("/{REPO}/resolve/{COMMIT}/{f}"))
            .cloned()
            .collect()
    };
    // Only the chosen files were requested, each once, except the two resumed ones.
    let fetched: HashSet<String> = seen
        .iter()
        .filter_map(|s| s.path.strip_prefix(&format!("/{REPO}/resolve/{COMMIT}/")))
        .map(str::to_string)
        .collect();
    let wanted: HashSet<String> = SIDE_FILES
        .iter()
        .chain(graphs.iter())
        .map(|s| s.to_string())
        .collect();
    assert_eq!(fetched, wanted);
    // The dropped connection: a full request cut at half, then a ranged one from there.
    let dropped = "onnx/decoder_model_merged_q4f16.onnx_data";
    let reqs = resolve(dropped);
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[0].range, None);
    assert_eq!(
        reqs[1].range.as_deref(),
        Some(format!("bytes={}-", files[dropped].len() / 2).as_str())
    );
    // The interrupted run: one request, ranged from the partial file's end.
    let reqs = resolve(interrupted);
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].range.as_deref(), Some("bytes=1000-"));
    // The token went with every request.
    assert!(seen
        .iter()
        .all(|s| s.auth.as_deref() == Some("Bearer hf_test_token")));

    // The manifest: repo, commit, every file with its size and sha256.
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dest.join("quire-manifest.json")).unwrap()).unwrap();
    assert_eq!(m["repo"], REPO);
    assert_eq!(m["revision"], "main");
    assert_eq!(m["commit"], COMMIT);
    assert_eq!(m["endpoint"], hub.endpoint);
    let listed: Vec<(String, u64, String)> = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                f["size"].as_u64().unwrap(),
                f["sha256"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut want: Vec<(String, u64, String)> = wanted
        .iter()
        .map(|f| (f.clone(), files[f].len() as u64, sha256(&files[f])))
        .collect();
    want.sort();
    assert_eq!(listed, want);

    // A second pull finds everything in place: no graph is fetched again.
    let before = hub.seen.lock().unwrap().len();
    let out = quire(
        &hub.endpoint,
        &[
            "model",
            "pull",
            REPO,
            "--dtype",
            "q4f16",
            "--dir",
            dest.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    let again: Vec<Seen> = hub.seen.lock().unwrap()[before..].to_vec();
    assert!(again.iter().all(|s| !s.path.contains(".onnx")), "{again:?}");

    // verify: all good, then a flipped byte and a missing file are reported, exit 2.
    let out = quire(&hub.endpoint, &["model", "verify", dest.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains(&format!(
        "{} files match the manifest, 0 do not",
        wanted.len()
    )));

    let flipped = dest.join("onnx/embed_tokens_q4f16.onnx_data");
    let mut bytes = std::fs::read(&flipped).unwrap();
    bytes[500] ^= 0x01;
    std::fs::write(&flipped, &bytes).unwrap();
    std::fs::remove_file(dest.join("tokenizer.json")).unwrap();
    let out = quire(&hub.endpoint, &["model", "verify", dest.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "MISMATCH onnx/embed_tokens_q4f16.onnx_data: sha256 {}, manifest says {}",
            sha256(&bytes),
            sha256(&files["onnx/embed_tokens_q4f16.onnx_data"])
        )),
        "{text}"
    );
    assert!(text.contains("MISMATCH tokenizer.json: missing"), "{text}");
    assert!(text.contains(&format!(
        "{} files match the manifest, 2 do not",
        wanted.len() - 2
    )));
}

#[test]
fn a_hash_mismatch_is_refused_and_nothing_is_left_as_if_good() {
    let bad = "onnx/vision_encoder_q4f16.onnx_data";
    let hub = start_hub(repo_files(), Some(bad), None);
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("m");
    let out = quire(
        &hub.endpoint,
        &[
            "model",
            "pull",
            REPO,
            "--dtype",
            "q4f16",
            "--dir",
            dest.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{bad}: sha256 "))
            && err.contains(&format!(
                "does not match the hub's {}",
                sha256(b"something else")
            )),
        "{err}"
    );
    assert!(!dest.join(bad).exists());
    assert!(!dest.join(format!("{bad}.part")).exists());
    assert!(!dest.join("quire-manifest.json").exists());
}

#[test]
fn a_dtype_the_repository_lacks_and_an_unreachable_hub_are_clear_errors() {
    let hub = start_hub(repo_files(), None, None);
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("m");
    // The tiny model has no q4 vision encoder.
    let out = quire(
        &hub.endpoint,
        &[
            "model",
            "pull",
            REPO,
            "--dtype",
            "q4",
            "--dir",
            dest.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing onnx/vision_encoder_q4.onnx"), "{err}");
    assert!(!dest.join("config.json").exists());

    // A port nothing listens on.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let out = quire(
        &endpoint,
        &["model", "pull", REPO, "--dir", dest.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot reach the model hub at {endpoint}")),
        "{err}"
    );

    // --offline forbids it before any connection.
    let out = quire(&hub.endpoint, &["--offline", "model", "pull", REPO]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("downloads are forbidden"));
}

#[test]
fn list_shows_every_dtype_of_the_tiny_model_and_its_contract_check() {
    let out = quire(
        "http://127.0.0.1:9",
        &["model", "list", tiny().parent().unwrap().to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("{}  [no quire-manifest.json]", tiny().display())),
        "{text}"
    );
    let row = |d: &str| -> Vec<String> {
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(d))
            .unwrap_or_else(|| panic!("no {d} row in\n{text}"));
        line.split_whitespace().map(str::to_string).collect()
    };
    for d in ["fp32", "fp16", "q8", "q4f16"] {
        assert_eq!(row(d)[1..4], ["ok", "ok", "ok"], "{d}: {text}");
    }
    // The tiny model has no q4 vision encoder (used with the fp32 one).
    assert_eq!(row("q4")[1..4], ["-", "ok", "ok"], "{text}");
    assert!(!text.contains("FAILS CONTRACT"), "{text}");
}

#[test]
fn the_token_does_not_follow_a_redirect_to_another_host() {
    // The storage host is the same stub under another name: a different host for the client.
    let storage = start_hub(repo_files(), None, None);
    let storage_endpoint = storage.endpoint.replace("127.0.0.1", "localhost");
    let hub = start_hub_redirecting(repo_files(), None, None, Some(storage_endpoint));
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("m");
    let out = quire(
        &hub.endpoint,
        &[
            "model",
            "pull",
            REPO,
            "--dtype",
            "fp16",
            "--dir",
            dest.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    let data = "onnx/decoder_model_merged_fp16.onnx_data";
    assert_eq!(
        std::fs::read(dest.join(data)).unwrap(),
        std::fs::read(tiny().join(data)).unwrap()
    );
    let at_storage = storage.seen.lock().unwrap().clone();
    assert_eq!(
        at_storage.len(),
        3,
        "the three .onnx_data files: {at_storage:?}"
    );
    assert!(
        at_storage.iter().all(|s| s.auth.is_none()),
        "{at_storage:?}"
    );
    assert!(hub
        .seen
        .lock()
        .unwrap()
        .iter()
        .all(|s| s.auth.as_deref() == Some("Bearer hf_test_token")));
}
