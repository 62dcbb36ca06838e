//! Errors of constrained decoding.

/// A schema quire cannot use. Raised before any document is processed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SchemaError {
    /// A keyword quire does not support (or cannot bound).
    #[error("unsupported schema keyword `{keyword}` at {pointer:?}: {reason}")]
    Unsupported {
        keyword: String,
        /// JSON pointer of the keyword in the user schema.
        pointer: String,
        reason: String,
    },
    /// A malformed schema.
    #[error("invalid schema at {pointer:?}: {message}")]
    Invalid { pointer: String, message: String },
    /// Even with the smallest defaults the complete output may not fit the token limit.
    #[error(
        "the schema does not fit --max-new-tokens {max_new_tokens}: a complete object can need \
         {smallest_max_new_tokens} tokens even with quire's smallest defaults (strings without \
         maxLength cut to {max_length} characters, arrays without maxItems to {max_items} \
         items); use --max-new-tokens {smallest_max_new_tokens} or more, or give the schema \
         smaller maxLength/maxItems/maximum"
    )]
    DoesNotFit {
        /// The smallest `max_new_tokens` that this schema fits.
        smallest_max_new_tokens: usize,
        max_new_tokens: usize,
        max_length: usize,
        max_items: usize,
    },
    /// llguidance refused the (normalized) schema; the first line of its message.
    #[error("the grammar engine rejected the schema: {0}")]
    Compile(String),
    /// The schema is not a valid JSON Schema for the validator.
    #[error("the validator rejected the schema: {0}")]
    Validator(String),
}

/// Errors while decoding or validating one sequence.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConstraintError {
    /// Loading the tokenizer or building the token trie failed.
    #[error("tokenizer for constrained decoding: {0}")]
    Tokenizer(String),
    /// The matcher is in an error state (a disallowed token was consumed, ...).
    #[error("constrained decoding: {0}")]
    Matcher(String),
    /// No token is allowed although the JSON is not complete.
    #[error("constrained decoding reached a state where no token is allowed")]
    DeadEnd,
    /// A token was offered after the JSON was complete.
    #[error("token {0} offered after the JSON output was complete")]
    AfterFinish(u32),
}

/// An output that is not valid against the user's schema: never written as valid.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValidationError {
    #[error("generation stopped after {tokens} tokens before the JSON output was complete")]
    Incomplete { tokens: usize },
    #[error("output is not JSON: {0}")]
    NotJson(String),
    #[error("output does not match the schema at {instance_path:?}: {message}")]
    Schema {
        instance_path: String,
        message: String,
    },
}
