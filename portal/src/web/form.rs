//! `application/x-www-form-urlencoded` bodies (with repeated keys, which
//! serde_urlencoded cannot read into lists) and per-field errors.

use crate::api::error::{ApiError, FieldError};

#[derive(Debug, Default, Clone)]
pub struct FormData(Vec<(String, String)>);

impl FormData {
    pub fn parse(body: &[u8]) -> Self {
        Self(form_urlencoded::parse(body).into_owned().collect())
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first value of `name`, trimmed; empty when absent.
    pub fn text(&self, name: &str) -> String {
        self.get(name).unwrap_or("").trim().to_owned()
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn checked(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

/// Field errors to show next to the inputs, keyed by form field name.
#[derive(Debug, Default, Clone)]
pub struct Errors {
    pub fields: Vec<(String, String)>,
    /// Not about one field (conflicts, references).
    pub general: Vec<String>,
}

impl Errors {
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty() && self.general.is_empty()
    }

    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        self.fields.push((field.to_owned(), message.into()));
    }

    pub fn for_field(&self, field: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(f, _)| f == field)
            .map(|(_, m)| m.as_str())
            .collect()
    }

    /// Maps an API error onto form fields: `map` turns the API's field path
    /// (`address.pattern`, `filters[0]`) into a form field name. `None`
    /// for errors a page should not show inline (internal, not found).
    pub fn from_api(e: ApiError, map: impl Fn(&str) -> String) -> Result<Self, ApiError> {
        let mut errors = Self::default();
        match e {
            ApiError::Validation(fields) => {
                for FieldError { field, message } in fields {
                    errors.add(&map(&field), message);
                }
            }
            ApiError::Conflict(m) | ApiError::BadRequest(m) => errors.general.push(m),
            other => return Err(other),
        }
        Ok(errors)
    }
}

/// The leading name of a dotted/indexed API field path: `filters[0].ports`
/// → `filters`.
pub fn head(path: &str) -> String {
    path.split(['.', '[']).next().unwrap_or("").to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_repeated_keys_and_escapes() {
        let f = FormData::parse(b"a=1&site=x&site=y&n=hello+w%C3%B6rld&c=");
        assert_eq!(f.all("site"), vec!["x", "y"]);
        assert_eq!(f.text("n"), "hello wörld");
        assert!(f.checked("c"));
        assert!(!f.checked("d"));
    }

    #[test]
    fn head_strips_paths() {
        assert_eq!(head("filters[0].ports"), "filters");
        assert_eq!(head("address.pattern"), "address");
        assert_eq!(head("name"), "name");
    }
}
