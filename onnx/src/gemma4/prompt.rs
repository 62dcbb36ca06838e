//! Prompts: the model's own `chat_template.jinja` rendered with minijinja, image placeholders
//! expanded as the Python `Gemma4Processor` does, and tokenization without added specials
//! (the template emits `<bos>` itself). Token strings come from the tokenizer via the ids in
//! `config.json`, never from constants.

use super::error::Error;
use minijinja::value::Value;
use minijinja::{Environment, ErrorKind, State};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One chat message as the HF processors take it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Message {
    pub role: String,
    pub content: Content,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Part {
    Text { text: String },
    Image,
}

impl Message {
    /// A user turn: the images first (the model card's advice), then the text.
    pub fn user_with_images(images: usize, text: &str) -> Message {
        let mut parts: Vec<Part> = (0..images).map(|_| Part::Image).collect();
        parts.push(Part::Text {
            text: text.to_string(),
        });
        Message {
            role: "user".into(),
            content: Content::Parts(parts),
        }
    }
}

/// Special token strings the prompt builder needs, resolved from ids.
#[derive(Debug, Clone)]
pub struct SpecialTokens {
    pub bos: String,
    pub eos: Option<String>,
    pub image: String,
    pub boi: String,
    pub eoi: String,
}

/// `chat_template.jinja` plus the tokens it and the expansion use.
pub struct PromptBuilder {
    env: Environment<'static>,
    pub tokens: SpecialTokens,
}

const TEMPLATE: &str = "chat_template";

impl PromptBuilder {
    pub fn from_file(path: &Path, tokens: SpecialTokens) -> Result<Self, Error> {
        let source = std::fs::read_to_string(path).map_err(|e| Error::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        Self::new(source, tokens)
    }

    pub fn new(source: String, tokens: SpecialTokens) -> Result<Self, Error> {
        let mut env = Environment::new();
        // HF renders with trim_blocks and lstrip_blocks.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(python_methods);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<Value, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_template_owned(TEMPLATE, source)
            .map_err(|e| Error::Template(format!("{e:#}")))?;
        Ok(PromptBuilder { env, tokens })
    }

    /// Renders the conversation as `apply_chat_template(..., tokenize=False)` does.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        enable_thinking: bool,
    ) -> Result<String, Error> {
        let tmpl = self.env.get_template(TEMPLATE).expect("added in new()");
        tmpl.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            enable_thinking => enable_thinking,
            bos_token => self.tokens.bos,
            eos_token => self.tokens.eos,
        })
        .map_err(|e| Error::Template(format!("{e:#}")))
    }

    /// Replaces the k-th image placeholder with `boi + image×n_k + eoi` (no extra newlines,
    /// as the Python processor does).
    pub fn expand_images(&self, prompt: &str, soft_tokens: &[usize]) -> Result<String, Error> {
        let t = &self.tokens;
        let pieces: Vec<&str> = prompt.split(t.image.as_str()).collect();
        if pieces.len() - 1 != soft_tokens.len() {
            return Err(Error::Invalid(format!(
                "the prompt has {} image placeholders ({}) but {} images were given",
                pieces.len() - 1,
                t.image,
                soft_tokens.len()
            )));
        }
        let mut out =
            String::with_capacity(prompt.len() + soft_tokens.iter().sum::<usize>() * t.image.len());
        for (i, piece) in pieces.iter().enumerate() {
            out.push_str(piece);
            if let Some(&n) = soft_tokens.get(i) {
                out.push_str(&t.boi);
                for _ in 0..n {
                    out.push_str(&t.image);
                }
                out.push_str(&t.eoi);
            }
        }
        Ok(out)
    }
}

/// The Python `str`/`dict` methods HF chat templates call, which Jinja2 allows and minijinja
/// does not know natively.
fn python_methods(
    _state: &State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, minijinja::Error> {
    let arg_str =
        |i: usize| -> Option<String> { args.get(i).and_then(|a| a.as_str().map(str::to_string)) };
    if let Some(s) = value.as_str() {
        let r = match method {
            "split" => match arg_str(0) {
                Some(sep) => {
                    Value::from(s.split(sep.as_str()).map(Value::from).collect::<Vec<_>>())
                }
                None => Value::from(s.split_whitespace().map(Value::from).collect::<Vec<_>>()),
            },
            "rsplit" if args.len() <= 1 => match arg_str(0) {
                Some(sep) => {
                    Value::from(s.split(sep.as_str()).map(Value::from).collect::<Vec<_>>())
                }
                None => Value::from(s.split_whitespace().map(Value::from).collect::<Vec<_>>()),
            },
            "startswith" => Value::from(arg_str(0).is_some_and(|p| s.starts_with(&p))),
            "endswith" => Value::from(arg_str(0).is_some_and(|p| s.ends_with(&p))),
            "strip" => Value::from(match arg_str(0) {
                Some(c) => s.trim_matches(|ch| c.contains(ch)).to_string(),
                None => s.trim().to_string(),
            }),
            "lstrip" => Value::from(match arg_str(0) {
                Some(c) => s.trim_start_matches(|ch| c.contains(ch)).to_string(),
                None => s.trim_start().to_string(),
            }),
            "rstrip" => Value::from(match arg_str(0) {
                Some(c) => s.trim_end_matches(|ch| c.contains(ch)).to_string(),
                None => s.trim_end().to_string(),
            }),
            "upper" => Value::from(s.to_uppercase()),
            "lower" => Value::from(s.to_lowercase()),
            "replace" => match (arg_str(0), arg_str(1)) {
                (Some(a), Some(b)) => Value::from(s.replace(&a, &b)),
                _ => {
                    return Err(minijinja::Error::new(
                        ErrorKind::MissingArgument,
                        "replace(old, new)",
                    ))
                }
            },
            "find" => Value::from(
                arg_str(0)
                    .and_then(|p| s.find(&p))
                    .map(|i| i as i64)
                    .unwrap_or(-1),
            ),
            _ => return Err(minijinja::Error::from(ErrorKind::UnknownMethod)),
        };
        return Ok(r);
    }
    if value.as_object().is_some() {
        match method {
            "items" => {
                let mut out = Vec::new();
                for k in value.try_iter()? {
                    let v = value.get_item(&k)?;
                    out.push(Value::from(vec![k, v]));
                }
                return Ok(Value::from(out));
            }
            "keys" => return Ok(Value::from(value.try_iter()?.collect::<Vec<_>>())),
            "values" => {
                let mut out = Vec::new();
                for k in value.try_iter()? {
                    out.push(value.get_item(&k)?);
                }
                return Ok(Value::from(out));
            }
            "get" => {
                let key = args.first().cloned().unwrap_or_default();
                let v = value.get_item(&key)?;
                return Ok(if v.is_undefined() {
                    args.get(1).cloned().unwrap_or(Value::from(()))
                } else {
                    v
                });
            }
            _ => {}
        }
    }
    Err(minijinja::Error::from(ErrorKind::UnknownMethod))
}

/// The model's tokenizer (`tokenizer.json`).
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: std::path::PathBuf,
}

impl Tokenizer {
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| Error::Tokenizer {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(Tokenizer {
            inner,
            path: path.to_path_buf(),
        })
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        Error::Tokenizer {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// Token ids of `text` with `add_special_tokens = false`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, Error> {
        let enc = self.inner.encode(text, false).map_err(|e| self.err(e))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, Error> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| self.err(e))
    }

    /// The string of token `id`, or an error naming the config field it came from.
    pub fn token(&self, id: u32, field: &str) -> Result<String, Error> {
        self.inner.id_to_token(id).ok_or_else(|| {
            self.err(format!(
                "config.json {field} = {id} is not in the vocabulary"
            ))
        })
    }

    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builder(src: &str) -> PromptBuilder {
        PromptBuilder::new(
            src.to_string(),
            SpecialTokens {
                bos: "<bos>".into(),
                eos: None,
                image: "<|image|>".into(),
                boi: "<|image>".into(),
                eoi: "<image|>".into(),
            },
        )
        .unwrap()
    }

    #[test]
    fn python_string_methods_and_expansion() {
        let b = builder(
            "{{ bos_token }}{% for m in messages %}{{ m['role'].upper() }}:{{ m['content'].split('|')[0].strip() }}{% endfor %}",
        );
        let msgs = [Message {
            role: "user".into(),
            content: Content::Text(" a |b".into()),
        }];
        assert_eq!(b.render(&msgs, true, false).unwrap(), "<bos>USER:a");
        let out = b.expand_images("x<|image|>y<|image|>", &[2, 1]).unwrap();
        assert_eq!(
            out,
            "x<|image><|image|><|image|><image|>y<|image><|image|><image|>"
        );
        assert!(b.expand_images("x<|image|>", &[]).is_err());
    }
}
