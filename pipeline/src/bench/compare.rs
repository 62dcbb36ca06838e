//! `quire bench --compare URL`: the same documents through an OpenAI-compatible chat
//! completions endpoint (a local vLLM or llama.cpp server, typically), to score a reference
//! model beside the grid. One request per document: the task's instruction (the prompt quire
//! gives its own model, text anchor included) and the pages as PNG data URLs in `image_url`
//! parts; for `extract`, the schema as `response_format: {"type": "json_schema", ...}`.

use crate::render::{PoolOptions, RenderEvent};
use crate::run::task::{self, Task};
use crate::sources::Source;
use crate::Page;
use base64::Engine as _;
use quire_exporters::layout::display_relative;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Where the reference model is.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `http://host:port/v1` (`/chat/completions` is appended) or the full completions URL.
    pub url: String,
    pub model: String,
    /// Sent as `Authorization: Bearer KEY`.
    pub api_key: Option<String>,
    /// Longest one request may take.
    pub timeout: Duration,
}

impl Endpoint {
    pub fn completions_url(&self) -> String {
        let url = self.url.trim_end_matches('/');
        if url.ends_with("/chat/completions") {
            url.to_string()
        } else {
            format!("{url}/chat/completions")
        }
    }
}

/// What the reference model made of one document.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    /// As records name it (relative to the input root).
    pub source: String,
    pub pages: u32,
    pub data: Option<Value>,
    pub text: Option<String>,
    /// Why there is no answer (rendering, HTTP, an answer that is not JSON).
    pub error: Option<String>,
    /// The request's round trip.
    pub latency: Duration,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// Sends every document of `sources`, rendered with `opts`, to `endpoint`; one answer per
/// document, in the order rendering finished them. `anchor` gives the PDF text layer in the
/// prompt as `quire run` does.
pub fn compare(
    endpoint: &Endpoint,
    task: &Task,
    anchor: bool,
    sources: Vec<Source>,
    opts: PoolOptions,
) -> Vec<Answer> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(endpoint.timeout))
        .http_status_as_error(false)
        .build()
        .into();
    let mut pages: HashMap<PathBuf, Vec<Page>> = HashMap::new();
    let mut errors: HashMap<PathBuf, String> = HashMap::new();
    let mut answers = Vec::new();
    for event in crate::render::render(sources, opts) {
        match event {
            RenderEvent::Page(page) => pages.entry(page.source.clone()).or_default().push(page),
            RenderEvent::Error(e) => {
                errors
                    .entry(e.path.clone())
                    .or_insert_with(|| e.to_string());
            }
            RenderEvent::Finished(doc) => {
                let mut doc_pages = pages.remove(&doc.source).unwrap_or_default();
                doc_pages.sort_by_key(|p| p.page_index);
                let mut answer = match errors.remove(&doc.source) {
                    Some(error) => Answer {
                        error: Some(format!("rendering: {error}")),
                        ..Answer::default()
                    },
                    None => ask(&agent, endpoint, task, anchor, &doc_pages),
                };
                answer.source = display_relative(&doc.relative);
                answer.pages = doc_pages.len() as u32;
                answers.push(answer);
            }
        }
    }
    answers
}

fn ask(
    agent: &ureq::Agent,
    endpoint: &Endpoint,
    task: &Task,
    anchor: bool,
    pages: &[Page],
) -> Answer {
    let started = Instant::now();
    let result = request_body(endpoint, task, anchor, pages).and_then(|body| {
        let mut request = agent
            .post(endpoint.completions_url())
            .header("Content-Type", "application/json");
        if let Some(key) = &endpoint.api_key {
            request = request.header("Authorization", format!("Bearer {key}"));
        }
        let mut response = request
            .send(body.to_string())
            .map_err(|e| format!("{}: {e}", endpoint.completions_url()))?;
        let status = response.status();
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|e| format!("reading the answer: {e}"))?;
        if !status.is_success() {
            let head: String = text.chars().take(300).collect();
            return Err(format!("HTTP {status}: {head}"));
        }
        serde_json::from_str::<Value>(&text).map_err(|e| format!("the answer is not JSON: {e}"))
    });
    let mut answer = Answer {
        latency: started.elapsed(),
        ..Answer::default()
    };
    match result.and_then(|reply| read_reply(task, &reply, &mut answer)) {
        Ok(()) => {}
        Err(e) => answer.error = Some(e),
    }
    answer
}

/// The chat completions request for one document.
pub fn request_body(
    endpoint: &Endpoint,
    task: &Task,
    anchor: bool,
    pages: &[Page],
) -> Result<Value, String> {
    let anchor_text = anchor
        .then(|| {
            task::text_anchor(
                pages.iter().map(|p| p.text_layer.as_deref()),
                task::MAX_ANCHOR_CHARS_PER_PAGE,
            )
        })
        .flatten();
    let mut content = vec![json!({
        "type": "text",
        "text": task.instruction(pages.len(), anchor_text.as_deref()),
    })];
    for page in pages {
        let mut png = Vec::new();
        page.image
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .map_err(|e| format!("encoding page {} as PNG: {e}", page.page_index + 1))?;
        let data = base64::engine::general_purpose::STANDARD.encode(&png);
        content.push(json!({
            "type": "image_url",
            "image_url": {"url": format!("data:image/png;base64,{data}")},
        }));
    }
    let mut body = json!({
        "model": endpoint.model,
        "messages": [{"role": "user", "content": content}],
        "temperature": 0,
    });
    if let Task::Extract { schema } = task {
        body["response_format"] = json!({
            "type": "json_schema",
            "json_schema": {"name": "extraction", "schema": schema, "strict": true},
        });
    }
    Ok(body)
}

/// The answer's content (`choices[0].message.content`) as data or text, and its token usage.
fn read_reply(task: &Task, reply: &Value, answer: &mut Answer) -> Result<(), String> {
    answer.prompt_tokens = reply["usage"]["prompt_tokens"].as_u64().unwrap_or(0);
    answer.completion_tokens = reply["usage"]["completion_tokens"].as_u64().unwrap_or(0);
    let content = reply["choices"][0]["message"]["content"]
        .as_str()
        .ok_or("the answer has no choices[0].message.content")?;
    match task {
        Task::Extract { .. } => {
            let json = strip_fences(content);
            let data: Value = serde_json::from_str(json)
                .map_err(|e| format!("the answer's content is not JSON ({e})"))?;
            answer.data = Some(data);
        }
        Task::Ocr | Task::Prompt { .. } => answer.text = Some(content.to_string()),
    }
    Ok(())
}

/// The JSON inside a Markdown code fence, as some servers answer even with a JSON format.
fn strip_fences(content: &str) -> &str {
    let t = content.trim();
    t.strip_prefix("```json")
        .or_else(|| t.strip_prefix("```"))
        .and_then(|rest| rest.strip_suffix("```"))
        .map_or(t, str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_fenced_answers() {
        let e = |url: &str| Endpoint {
            url: url.into(),
            model: "m".into(),
            api_key: None,
            timeout: Duration::from_secs(1),
        };
        assert_eq!(
            e("http://h:8000/v1/").completions_url(),
            "http://h:8000/v1/chat/completions"
        );
        assert_eq!(
            e("http://h/v1/chat/completions").completions_url(),
            "http://h/v1/chat/completions"
        );
        assert_eq!(strip_fences("```json\n{\"a\": 1}\n```"), "{\"a\": 1}");
        assert_eq!(strip_fences(" {\"a\": 1} "), "{\"a\": 1}");
    }
}
