//! Offset pagination shared by every list endpoint.
//!
//! `?limit=N&offset=M`: `limit` is 1..=200 (default 50), `offset` 0..
//! (default 0). Each list has a stable order on unique columns (documented
//! per endpoint), so walking pages with `offset = next_offset` sees every
//! row once while nothing is inserted or deleted. `next_offset` is `null`
//! on the last page.

use serde::{Deserialize, Serialize};
use utoipa::IntoParams;

use super::{error::ApiError, extract::parse_param};

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 200;
/// Deep offsets are slow scans; a filter narrows better.
pub const MAX_OFFSET: i64 = 1_000_000;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Items per page, 1..=200 (default 50).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 200)]
    pub limit: Option<String>,
    /// Items to skip, 0..=1000000 (default 0); use the previous page's `next_offset`.
    #[param(value_type = Option<i64>, minimum = 0, maximum = 1000000)]
    pub offset: Option<String>,
}

/// A validated page request.
#[derive(Debug, Clone, Copy)]
pub struct PageReq {
    pub limit: i64,
    pub offset: i64,
}

impl PageParams {
    pub fn validate(&self) -> Result<PageReq, ApiError> {
        let limit = parse_param::<i64>(self.limit.as_deref(), "limit", "an integer")?
            .unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::field(
                "limit",
                format!("must be between 1 and {MAX_LIMIT}"),
            ));
        }
        let offset =
            parse_param::<i64>(self.offset.as_deref(), "offset", "an integer")?.unwrap_or(0);
        if !(0..=MAX_OFFSET).contains(&offset) {
            return Err(ApiError::field(
                "offset",
                format!("must be between 0 and {MAX_OFFSET}"),
            ));
        }
        Ok(PageReq { limit, offset })
    }
}

impl PageReq {
    /// What to ask the store for: one more than a page, to learn whether
    /// another page follows.
    pub fn fetch(&self) -> (i64, i64) {
        (self.limit + 1, self.offset)
    }

    pub fn page<T, U>(&self, mut rows: Vec<T>, f: impl FnMut(T) -> U) -> Page<U> {
        let more = rows.len() as i64 > self.limit;
        rows.truncate(self.limit as usize);
        Page {
            next_offset: more.then_some(self.offset + self.limit),
            items: rows.into_iter().map(f).collect(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_offset: Option<i64>,
}

/// A documentation-only schema of `Page<$item>` named `$name`.
macro_rules! page_schema {
    ($name:ident, $item:ty) => {
        #[derive(utoipa::ToSchema)]
        #[allow(dead_code)]
        pub struct $name {
            pub items: Vec<$item>,
            /// Offset of the next page; null on the last page.
            pub next_offset: Option<i64>,
        }
    };
}
pub(crate) use page_schema;
