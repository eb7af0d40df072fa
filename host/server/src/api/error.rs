//! Errors in the OpenAI shape: `{"error": {"message", "type", "param", "code"}}`.

use serde_json::json;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        Self { status: 400, message: message.into(), kind: "invalid_request_error", param: Some(param.into()), retry_after: None }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self { status: 400, message: message.into(), kind: "invalid_request_error", param: None, retry_after: None }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self { status: 404, message: message.into(), kind: "not_found_error", param: None, retry_after: None }
    }

    pub fn model_not_found(model: &str) -> Self {
        Self {
            status: 404,
            message: format!("the model `{model}` does not exist"),
            kind: "not_found_error",
            param: Some("model".into()),
            retry_after: None,
        }
    }

    pub fn overloaded(message: impl Into<String>) -> Self {
        Self { status: 503, message: message.into(), kind: "service_unavailable", param: None, retry_after: Some(1) }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self { status: 500, message: message.into(), kind: "internal_error", param: None, retry_after: None }
    }

    /// A failed generation as the client sees it: a message by cause, never the detail.
    pub fn from_failure(f: &mlahost_runtime::Failure) -> Self {
        match f.status() {
            503 => Self::overloaded(f.public_message()),
            _ => Self::internal(f.public_message()),
        }
    }

    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.status}})
    }
}
