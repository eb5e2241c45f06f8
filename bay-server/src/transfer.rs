//! Upload and download, streamed end to end (bay-api.md §4.16, §4.17).
//!
//! An upload is parsed while it streams in; its file part is spooled to an anonymous temporary
//! file (never held in memory) under `MAX_UPLOAD_SIZE`, then streamed from that file to the
//! ship. A download relays the ship's byte stream as it arrives.

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bay_api_types::UploadResponse;
use futures::TryStreamExt;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use tokio_util::io::ReaderStream;

use crate::app::AppState;
use crate::error::{ApiError, Op};
use crate::extract::{PathParam, Query};
use crate::validate::{Violations, loc};

/// Slack above `MAX_UPLOAD_SIZE` for the whole multipart body (headers, other parts).
const MULTIPART_OVERHEAD: u64 = 1 << 20;
/// Largest `file_path` part read; longer values are reported as too long.
const MAX_FILE_PATH_PART: usize = 64 << 10;

fn parse_error() -> ApiError {
    ApiError::detail(
        StatusCode::BAD_REQUEST,
        "There was an error parsing the body",
        "multipart_invalid",
    )
}

fn spool_error(e: &std::io::Error) -> ApiError {
    ApiError::Internal(format!(
        "spooling an upload to a temporary file failed: {e}"
    ))
}

/// What the multipart body held.
struct Parts {
    file: Option<(tokio::fs::File, u64)>,
    file_path: Option<String>,
    file_first: bool,
}

/// Reads the multipart body: the first `file` part is spooled to a temporary file, the first
/// `file_path` part is kept as text, other parts are drained.
async fn read_multipart(body: Body, boundary: String, max: u64) -> Result<Parts, ApiError> {
    let constraints = multer::Constraints::new()
        .size_limit(multer::SizeLimit::new().whole_stream(max + MULTIPART_OVERHEAD));
    let mut multipart =
        multer::Multipart::with_constraints(body.into_data_stream(), boundary, constraints);
    let too_large = || ApiError::upload_too_large(max);
    let map = |e: multer::Error| match e {
        multer::Error::StreamSizeExceeded { .. } | multer::Error::FieldSizeExceeded { .. } => {
            ApiError::upload_too_large(max)
        }
        other => {
            tracing::debug!(error = %other, "malformed multipart body");
            parse_error()
        }
    };
    let mut parts = Parts {
        file: None,
        file_path: None,
        file_first: false,
    };
    while let Some(mut field) = multipart.next_field().await.map_err(map)? {
        match field.name() {
            Some("file") if parts.file.is_none() => {
                parts.file_first = parts.file_path.is_none();
                let std_file = tempfile::tempfile().map_err(|e| spool_error(&e))?;
                let mut file = tokio::fs::File::from_std(std_file);
                let mut size: u64 = 0;
                while let Some(chunk) = field.chunk().await.map_err(map)? {
                    size += chunk.len() as u64;
                    if size > max {
                        return Err(too_large());
                    }
                    file.write_all(&chunk).await.map_err(|e| spool_error(&e))?;
                }
                file.flush().await.map_err(|e| spool_error(&e))?;
                file.rewind().await.map_err(|e| spool_error(&e))?;
                parts.file = Some((file, size));
            }
            Some("file_path") if parts.file_path.is_none() => {
                let mut text = Vec::new();
                while let Some(chunk) = field.chunk().await.map_err(map)? {
                    if text.len() < MAX_FILE_PATH_PART {
                        text.extend_from_slice(&chunk);
                    }
                }
                parts.file_path = Some(String::from_utf8_lossy(&text).into_owned());
            }
            _ => while field.chunk().await.map_err(map)?.is_some() {},
        }
    }
    Ok(parts)
}

/// `POST /ship/{ship_id}/upload`
pub async fn upload(
    State(state): State<AppState>,
    PathParam(ship_id): PathParam,
    req: Request,
) -> Result<Response, ApiError> {
    let (head, body) = req.into_parts();
    let mut v = Violations::new();
    let session = v.session_header(&head.headers);
    v.finish()?;
    let session = session.ok_or_else(|| ApiError::Internal("validated session missing".into()))?;
    let max = state.service.config().max_upload_size;
    let declared = head
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max + MULTIPART_OVERHEAD) {
        return Err(ApiError::upload_too_large(max));
    }
    let boundary = head
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| multer::parse_boundary(ct).ok());
    let parts = match boundary {
        Some(b) => read_multipart(body, b, max).await?,
        None => Parts {
            file: None,
            file_path: None,
            file_first: true,
        },
    };
    let mut v = Violations::new();
    if parts.file.is_none() {
        v.missing(loc(&["body", "file"]));
    }
    match &parts.file_path {
        None => v.missing(loc(&["body", "file_path"])),
        Some(p) => {
            v.file_path(loc(&["body", "file_path"]), p);
        }
    }
    v.finish()?;
    let (Some((file, size)), Some(file_path)) = (parts.file, parts.file_path) else {
        return Err(ApiError::Internal("validated upload incomplete".into()));
    };
    let stream = ReaderStream::with_capacity(file, 64 << 10);
    let answer = state
        .service
        .upload(
            &ship_id,
            &session,
            &file_path,
            stream,
            Some(size),
            parts.file_first,
        )
        .await
        .map_err(|e| ApiError::from_core(e, Op::Upload))?;
    let resolved = answer
        .get("file_path")
        .and_then(Value::as_str)
        .map_or(file_path, str::to_owned);
    Ok(Json(UploadResponse::ok(resolved)).into_response())
}

/// RFC 5987 `attr-char`s are kept; everything else is percent-encoded.
const ATTR_CHAR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// The `Content-Disposition` of a download (RFC 6266 / RFC 5987): the name is the text after
/// the last `/` of the requested path.
///
/// ```
/// use bay_server::transfer::content_disposition;
/// assert_eq!(
///     content_disposition("dir/ré\"sumé.txt"),
///     "attachment; filename=\"r__sum_.txt\"; filename*=UTF-8''r%C3%A9%22sum%C3%A9.txt"
/// );
/// ```
pub fn content_disposition(file_path: &str) -> String {
    let name = file_path.rsplit('/').next().unwrap_or_default();
    let ascii: String = name
        .chars()
        .map(|c| {
            if !c.is_ascii() || c == '"' || c == '\\' || c.is_ascii_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{}",
        utf8_percent_encode(name, ATTR_CHAR)
    )
}

/// `GET /ship/{ship_id}/download?file_path=`
pub async fn download(
    State(state): State<AppState>,
    PathParam(ship_id): PathParam,
    headers: HeaderMap,
    query: Query,
) -> Result<Response, ApiError> {
    let mut v = Violations::new();
    let session = v.session_header(&headers);
    let file_path = match query.get("file_path") {
        None => {
            v.missing(loc(&["query", "file_path"]));
            None
        }
        Some(p) => v.file_path(loc(&["query", "file_path"]), p).then_some(p),
    };
    v.finish()?;
    let (Some(session), Some(file_path)) = (session, file_path) else {
        return Err(ApiError::Internal("validated download incomplete".into()));
    };
    let download = state
        .service
        .download(&ship_id, &session, file_path)
        .await
        .map_err(|e| ApiError::from_core(e, Op::Download))?;
    let disposition = HeaderValue::from_str(&content_disposition(file_path))
        .map_err(|e| ApiError::Internal(format!("content-disposition header: {e}")))?;
    let mut response = Body::from_stream(download.stream.map_err(axum::Error::new)).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Some(len) = download.content_length {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    h.insert(header::CONTENT_DISPOSITION, disposition);
    Ok(response)
}
