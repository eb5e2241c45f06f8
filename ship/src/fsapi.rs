//! File API, upload and download (§5). Every operation runs on the blocking pool with the
//! session user's file-system credentials, after workspace path resolution (§4.2).

use std::fs;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use axum::body::{Body as HttpBody, Bytes};
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::api::{ApiError, ApiResult, Body, missing, ok, session_header};
use crate::paths::{OpenError, PathError, create_parents, open_file, resolve};
use crate::users::User;
use crate::{St, as_user};

/// Largest file `/fs/read_file` returns (32 MiB).
const READ_LIMIT: u64 = 32 << 20;

fn err(status: StatusCode, detail: impl Into<String>) -> ApiError {
    ApiError::new(status, detail)
}

/// Maps a resolution failure to its HTTP error.
fn path_error(e: &PathError, w: &Path) -> ApiError {
    match e {
        PathError::Nul => err(
            StatusCode::BAD_REQUEST,
            "Invalid path: contains a NUL character",
        ),
        PathError::Denied => denied(w),
        PathError::Loop => err(
            StatusCode::BAD_REQUEST,
            "Invalid path: too many levels of symbolic links",
        ),
    }
}

/// The 403 of a path outside the workspace `w` (§2.5).
fn denied(w: &Path) -> ApiError {
    err(
        StatusCode::FORBIDDEN,
        format!(
            "Access denied: path must be within workspace {}",
            w.display()
        ),
    )
}

/// Maps a failed [`open_file`]: 404 `not_found`, 400 `not_file`, 403, else through `fail`.
fn open_error(
    e: OpenError,
    w: &Path,
    not_found: impl Into<String>,
    not_file: impl Into<String>,
    fail: impl FnOnce(std::io::Error) -> ApiError,
) -> ApiError {
    match e {
        OpenError::NotFound => err(StatusCode::NOT_FOUND, not_found),
        OpenError::NotFile => err(StatusCode::BAD_REQUEST, not_file),
        OpenError::Denied => denied(w),
        OpenError::Io(e) => fail(e),
    }
}

/// [`create_parents`] with its failure mapped like [`open_error`].
fn parents(
    w: &Path,
    p: &Path,
    not_file: impl Into<String>,
    fail: impl FnOnce(std::io::Error) -> ApiError,
) -> Result<(), ApiError> {
    create_parents(w, p).map_err(|e| match e {
        // A missing parent that cannot be created is reported as the I/O failure it is.
        OpenError::NotFound => fail(std::io::Error::from_raw_os_error(libc::ENOENT)),
        e => open_error(e, w, "", not_file, fail),
    })
}

/// Parses the session header and the JSON body; header errors come first.
fn parse(headers: &HeaderMap, body: &Bytes) -> Result<(Result<String, Value>, Body), ApiError> {
    let sid = session_header(headers);
    let errors = sid.as_ref().err().cloned().into_iter().collect();
    let b = Body::parse(headers, body, errors)?;
    Ok((sid, b))
}

/// Finishes validation and returns the session id.
fn finish(sid: Result<String, Value>, b: &Body) -> Result<String, ApiError> {
    b.finish()?;
    sid.map_err(|e| ApiError::Validation(vec![e]))
}

/// A text encoding supported by the file API.
#[derive(Debug, Clone, Copy)]
enum Encoding {
    Utf8,
    Ascii,
    Latin1,
}

fn encoding(name: &str) -> Result<Encoding, ApiError> {
    match name.trim().to_ascii_lowercase().replace('_', "-").as_str() {
        "utf-8" | "utf8" | "u8" | "utf" => Ok(Encoding::Utf8),
        "ascii" | "us-ascii" | "646" => Ok(Encoding::Ascii),
        "latin-1" | "latin1" | "iso-8859-1" | "iso8859-1" | "l1" | "8859" | "cp819" | "latin" => {
            Ok(Encoding::Latin1)
        }
        _ => Err(err(
            StatusCode::BAD_REQUEST,
            format!("Unknown encoding: {name}"),
        )),
    }
}

/// The optional `encoding` field, UTF-8 by default; checked by [`encoding`] after validation.
fn encoding_field(b: &mut Body) -> String {
    b.opt_str("encoding", false)
        .unwrap_or_else(|| "utf-8".into())
}

fn decode(bytes: Vec<u8>, enc: Encoding) -> Option<String> {
    match enc {
        Encoding::Utf8 => String::from_utf8(bytes).ok(),
        Encoding::Ascii => bytes
            .is_ascii()
            .then(|| String::from_utf8(bytes).unwrap_or_default()),
        Encoding::Latin1 => Some(bytes.iter().map(|&b| b as char).collect()),
    }
}

fn encode(text: &str, enc: Encoding, name: &str) -> Result<Vec<u8>, String> {
    match enc {
        Encoding::Utf8 => Ok(text.as_bytes().to_vec()),
        Encoding::Ascii if text.is_ascii() => Ok(text.as_bytes().to_vec()),
        Encoding::Latin1 if text.chars().all(|c| (c as u32) < 256) => {
            Ok(text.chars().map(|c| c as u8).collect())
        }
        _ => Err(format!("content cannot be encoded as {name}")),
    }
}

/// `\r\n` and lone `\r` become `\n`.
fn normalise_newlines(s: &str) -> String {
    s.replace("\r\n", "\n").replace('\r', "\n")
}

/// The line window of §5.2 (reference slice semantics).
pub fn window(text: &str, offset: Option<i64>, limit: Option<i64>) -> String {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let n = lines.len() as i64;
    let start = match offset {
        Some(o) if o > 0 => o - 1,
        _ => 0,
    };
    let end = match limit {
        None => n,
        Some(l) => {
            let mut end = start.saturating_add(l);
            if end < 0 {
                end += n;
            }
            end.min(n)
        }
    };
    if start >= n || end <= start {
        return String::new();
    }
    lines[start as usize..end as usize].concat()
}

fn io_reason(e: &std::io::Error) -> String {
    e.to_string()
}

/// The 500 of a failed operation: `"{what}: {reason}"`.
fn failure(what: &'static str) -> impl Fn(String) -> ApiError + Copy {
    move |reason| {
        err(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{what}: {reason}"),
        )
    }
}

/// [`failure`] for an I/O error.
fn io_failure(what: &'static str) -> impl Fn(std::io::Error) -> ApiError + Copy {
    move |e| failure(what)(io_reason(&e))
}

/// `path` resolved in the workspace `w` (§4.2), a failure mapped to its HTTP error.
fn resolve_in(w: &Path, path: &str, follow_last: bool) -> Result<PathBuf, ApiError> {
    resolve(w, path, follow_last).map_err(|e| path_error(&e, w))
}

/// The metadata of `p` (of a last symbolic link itself unless `follow`): 404 with
/// `not_found` when it does not exist, any other error through `fail`.
fn stat(
    p: &Path,
    follow: bool,
    not_found: impl Into<String>,
    fail: impl FnOnce(std::io::Error) -> ApiError,
) -> Result<fs::Metadata, ApiError> {
    let meta = if follow {
        fs::metadata(p)
    } else {
        fs::symlink_metadata(p)
    };
    match meta {
        Ok(m) => Ok(m),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(err(StatusCode::NOT_FOUND, not_found))
        }
        Err(e) => Err(fail(e)),
    }
}

/// Runs `op(w, p)` on the blocking pool as the session's user, with `w` the user's workspace
/// and `p` the `path` resolved in it.
async fn in_workspace<T: Send + 'static>(
    st: &St,
    sid: &str,
    path: String,
    follow_last: bool,
    op: impl FnOnce(&Path, PathBuf) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let user = st.user_or_500(sid).await?;
    let w = user.workspace.clone();
    as_user(&user, move || {
        let p = resolve_in(&w, &path, follow_last)?;
        op(&w, p)
    })
    .await?
}

/// POST /fs/create_file
pub async fn create_file(State(st): State<St>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let (sid, mut b) = parse(&headers, &body)?;
    let path = b.req_str("path");
    let content = b.opt_str("content", false).unwrap_or_default();
    let mode = b.opt_int("mode", false).flatten().unwrap_or(0o644);
    let sid = finish(sid, &b)?;
    in_workspace(&st, &sid, path.clone(), true, move |w, p| {
        let fail = io_failure("Failed to create file");
        let not_file = format!("Path is not a file: {path}");
        parents(w, &p, not_file.clone(), fail)?;
        let mut f = open_file(w, &p, libc::O_WRONLY | libc::O_TRUNC, Some(0o644))
            .map_err(|e| open_error(e, w, not_file.clone(), not_file, fail))?;
        f.write_all(content.as_bytes()).map_err(fail)?;
        f.set_permissions(fs::Permissions::from_mode((mode as u32) & 0o777))
            .map_err(fail)?;
        Ok(ok(
            json!({"success": true, "message": format!("File created: {path}"), "path": p}),
        ))
    })
    .await
}

/// POST /fs/read_file
pub async fn read_file(State(st): State<St>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let (sid, mut b) = parse(&headers, &body)?;
    let path = b.req_str("path");
    let enc_name = encoding_field(&mut b);
    let offset = b.opt_int("offset", true).flatten();
    let limit = b.opt_int("limit", true).flatten();
    let sid = finish(sid, &b)?;
    let enc = encoding(&enc_name)?;
    in_workspace(&st, &sid, path.clone(), true, move |w, p| {
        let fail = io_failure("Failed to read file");
        let mut f = open_file(w, &p, libc::O_RDONLY, None).map_err(|e| {
            open_error(
                e,
                w,
                format!("File not found: {path}"),
                format!("Path is not a file: {path}"),
                fail,
            )
        })?;
        let meta = f.metadata().map_err(fail)?;
        if meta.len() > READ_LIMIT {
            return Err(err(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "File too large to read: {path} (size {} bytes, limit {READ_LIMIT})",
                    meta.len()
                ),
            ));
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        Read::by_ref(&mut f)
            .take(READ_LIMIT + 1)
            .read_to_end(&mut bytes)
            .map_err(fail)?;
        let size = f.metadata().map_or(bytes.len() as u64, |m| m.len());
        let text = decode(bytes, enc).ok_or_else(|| {
            failure("Failed to read file")(format!("content is not valid {enc_name} text"))
        })?;
        let content = window(&normalise_newlines(&text), offset, limit);
        Ok(ok(json!({"content": content, "path": p, "size": size})))
    })
    .await
}

/// POST /fs/write_file
pub async fn write_file(State(st): State<St>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let (sid, mut b) = parse(&headers, &body)?;
    let path = b.req_str("path");
    let content = b.req_str("content");
    let mode = b.opt_str("mode", false).unwrap_or_else(|| "w".into());
    let enc_name = encoding_field(&mut b);
    let sid = finish(sid, &b)?;
    let enc = encoding(&enc_name)?;
    in_workspace(&st, &sid, path.clone(), true, move |w, p| {
        let fail = failure("Failed to write file");
        let io_fail = io_failure("Failed to write file");
        let data = encode(&content, enc, &enc_name).map_err(fail)?;
        let not_file = format!("Path is not a file: {path}");
        parents(w, &p, not_file.clone(), io_fail)?;
        let flags = if mode == "w" {
            libc::O_WRONLY | libc::O_TRUNC
        } else {
            libc::O_WRONLY | libc::O_APPEND
        };
        let mut f = open_file(w, &p, flags, Some(0o644))
            .map_err(|e| open_error(e, w, not_file.clone(), not_file, io_fail))?;
        f.write_all(&data).map_err(io_fail)?;
        let size = f.metadata().map_err(io_fail)?.len();
        Ok(ok(json!({"success": true, "message": format!("File written: {path}"), "path": p, "size": size})))
    })
    .await
}

/// POST /fs/edit_file
pub async fn edit_file(State(st): State<St>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let (sid, mut b) = parse(&headers, &body)?;
    let path = b.req_str("path");
    let old = b.req_str("old_string");
    let new = b.req_str("new_string");
    let replace_all = b.opt_bool("replace_all").unwrap_or(false);
    let enc_name = encoding_field(&mut b);
    let sid = finish(sid, &b)?;
    let enc = encoding(&enc_name)?;
    in_workspace(&st, &sid, path.clone(), true, move |w, p| {
        let fail = failure("Failed to edit file");
        let io_fail = io_failure("Failed to edit file");
        let not_file = format!("Path is not a file: {path}");
        let mut f = open_file(w, &p, libc::O_RDONLY, None).map_err(|e| {
            open_error(
                e,
                w,
                format!("File not found: {path}"),
                not_file.clone(),
                io_fail,
            )
        })?;
        let meta = f.metadata().map_err(io_fail)?;
        if old == new {
            return Err(err(StatusCode::BAD_REQUEST, "'old_string' and 'new_string' must differ"));
        }
        if meta.len() > READ_LIMIT {
            return Err(fail(format!("file is too large (size {} bytes, limit {READ_LIMIT})", meta.len())));
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        Read::by_ref(&mut f)
            .take(READ_LIMIT + 1)
            .read_to_end(&mut bytes)
            .map_err(io_fail)?;
        let text = decode(bytes, enc).ok_or_else(|| fail(format!("content is not valid {enc_name} text")))?;
        let text = normalise_newlines(&text);
        let count = text.matches(old.as_str()).count();
        if count == 0 {
            return Err(err(StatusCode::BAD_REQUEST, "'old_string' not found in file"));
        }
        if count > 1 && !replace_all {
            return Err(err(
                StatusCode::BAD_REQUEST,
                format!("'old_string' appears {count} times in file; set replace_all=true to replace all occurrences"),
            ));
        }
        let (out, n) = if replace_all {
            (text.replace(old.as_str(), &new), count)
        } else {
            (text.replacen(old.as_str(), &new, 1), 1)
        };
        let data = encode(&out, enc, &enc_name).map_err(fail)?;
        let mut f = open_file(w, &p, libc::O_WRONLY | libc::O_TRUNC, None)
            .map_err(|e| open_error(e, w, not_file.clone(), not_file, io_fail))?;
        f.write_all(&data).map_err(io_fail)?;
        Ok(ok(json!({"success": true, "message": format!("File edited: {path}"), "path": p,
            "replacements": n, "size": data.len()})))
    })
    .await
}

/// POST /fs/delete_file
pub async fn delete_file(State(st): State<St>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let (sid, mut b) = parse(&headers, &body)?;
    let path = b.req_str("path");
    let sid = finish(sid, &b)?;
    in_workspace(&st, &sid, path.clone(), false, move |w, p| {
        if p == w {
            return Err(err(
                StatusCode::BAD_REQUEST,
                "Cannot delete the workspace root",
            ));
        }
        let fail = io_failure("Failed to delete");
        let meta = stat(&p, false, format!("Path not found: {path}"), fail)?;
        let ft = meta.file_type();
        if ft.is_file() || ft.is_symlink() {
            fs::remove_file(&p).map_err(fail)?;
            Ok(ok(
                json!({"success": true, "message": format!("File deleted: {path}")}),
            ))
        } else if ft.is_dir() {
            fs::remove_dir_all(&p).map_err(fail)?;
            Ok(ok(
                json!({"success": true, "message": format!("Directory deleted: {path}")}),
            ))
        } else {
            Err(err(
                StatusCode::BAD_REQUEST,
                format!("Unknown path type: {path}"),
            ))
        }
    })
    .await
}

/// POST /fs/list_dir
pub async fn list_dir(State(st): State<St>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let (sid, mut b) = parse(&headers, &body)?;
    let path = b.opt_str("path", false).unwrap_or_else(|| ".".into());
    let show_hidden = b.opt_bool("show_hidden").unwrap_or(false);
    let sid = finish(sid, &b)?;
    in_workspace(&st, &sid, path.clone(), true, move |_, p| {
        let fail = io_failure("Failed to list directory");
        if !stat(&p, true, format!("Directory not found: {path}"), fail)?.is_dir() {
            return Err(err(
                StatusCode::BAD_REQUEST,
                format!("Path is not a directory: {path}"),
            ));
        }
        let mut entries: Vec<(bool, String, Value)> = Vec::new();
        for e in fs::read_dir(&p).map_err(fail)? {
            let e = e.map_err(fail)?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && !show_hidden {
                continue;
            }
            let full = p.join(&name);
            let Ok(m) = fs::metadata(&full) else { continue };
            let mtime = m.mtime() as f64 + m.mtime_nsec() as f64 / 1e9;
            entries.push((
                m.is_dir(),
                name.clone(),
                json!({"name": name, "path": full, "is_file": m.is_file(), "is_dir": m.is_dir(),
                    "size": if m.is_file() { Some(m.len()) } else { None }, "modified_time": mtime}),
            ));
        }
        entries.sort_by(|a, b| {
            b.0.cmp(&a.0)
                .then_with(|| a.1.to_lowercase().cmp(&b.1.to_lowercase()))
                .then_with(|| a.1.cmp(&b.1))
        });
        let files: Vec<Value> = entries.into_iter().map(|e| e.2).collect();
        Ok(ok(json!({"files": files, "current_path": p})))
    })
    .await
}

fn upload_failed(reason: &str) -> Response {
    ok(
        json!({"success": false, "message": "File upload failed", "file_path": null, "size": null, "error": reason}),
    )
}

/// A temporary upload file, removed on drop unless persisted.
struct TempUpload {
    path: PathBuf,
    user: User,
    keep: bool,
}

impl Drop for TempUpload {
    fn drop(&mut self) {
        if !self.keep {
            let path = self.path.clone();
            let id = self.user.ident();
            tokio::task::spawn_blocking(move || {
                crate::sys::with_fs_creds(id, || fs::remove_file(path))
            });
        }
    }
}

/// Creates the temporary file for an upload in `dir` (created if missing) as the user.
async fn open_temp(
    user: &User,
    dir: PathBuf,
) -> Result<Result<(TempUpload, tokio::fs::File), String>, ApiError> {
    let u = user.clone();
    let w = user.workspace.clone();
    as_user(user, move || {
        let path = dir.join(format!(".ship-upload-{:016x}.tmp", rand::random::<u64>()));
        let reason = |e: OpenError| match e {
            OpenError::NotFound => "No such file or directory".to_owned(),
            OpenError::NotFile => format!("not a regular file: {}", path.display()),
            OpenError::Denied => format!("path left the workspace: {}", path.display()),
            OpenError::Io(e) => io_reason(&e),
        };
        create_parents(&w, &path).map_err(reason)?;
        let f = open_file(&w, &path, libc::O_WRONLY, Some(0o644)).map_err(reason)?;
        Ok((
            TempUpload {
                path,
                user: u,
                keep: false,
            },
            tokio::fs::File::from_std(f),
        ))
    })
    .await
}

/// POST /upload and /fs/upload
pub async fn upload(State(st): State<St>, headers: HeaderMap, req: Request) -> ApiResult {
    let sid = session_header(&headers);
    let mut errors: Vec<Value> = sid.as_ref().err().cloned().into_iter().collect();
    let mut mp = Multipart::from_request(req, &()).await.ok();
    let user = match (&sid, &mp) {
        (Ok(s), Some(_)) => Some(st.user_or_500(s).await?),
        _ => None,
    };
    let mut file_path: Option<String> = None;
    let mut temp: Option<(TempUpload, u64)> = None;
    let mut soft_error: Option<String> = None;
    let mut saw_file = false;
    while let Some(m) = mp.as_mut() {
        let field = match m.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                soft_error.get_or_insert_with(|| format!("cannot read the upload: {e}"));
                break;
            }
        };
        match field.name() {
            Some("file_path") if file_path.is_none() => match field.text().await {
                Ok(t) => file_path = Some(t),
                Err(e) => {
                    soft_error.get_or_insert_with(|| format!("cannot read file_path: {e}"));
                    break;
                }
            },
            Some("file") if !saw_file => {
                saw_file = true;
                let Some(user) = &user else { continue };
                if soft_error.is_some() {
                    continue;
                }
                // Temporary file in the target directory when it is known, else in W.
                let dir = match &file_path {
                    Some(fp) => {
                        let w = user.workspace.clone();
                        let fp2 = fp.clone();
                        let target = as_user(user, move || resolve(&w, &fp2, true)).await?;
                        match target {
                            Ok(t) => t
                                .parent()
                                .map_or_else(|| user.workspace.clone(), Path::to_path_buf),
                            Err(e) => return Err(path_error(&e, &user.workspace)),
                        }
                    }
                    None => user.workspace.clone(),
                };
                match open_temp(user, dir).await? {
                    Ok((t, mut f)) => {
                        let mut size = 0u64;
                        let mut field = field;
                        loop {
                            match field.chunk().await {
                                Ok(Some(chunk)) => {
                                    size += chunk.len() as u64;
                                    if let Err(e) = f.write_all(&chunk).await {
                                        soft_error = Some(io_reason(&e));
                                        break;
                                    }
                                }
                                Ok(None) => break,
                                Err(e) => {
                                    soft_error = Some(format!("cannot read the upload: {e}"));
                                    break;
                                }
                            }
                        }
                        if soft_error.is_none()
                            && let Err(e) = f.flush().await
                        {
                            soft_error = Some(io_reason(&e));
                        }
                        drop(f);
                        temp = Some((t, size));
                    }
                    Err(reason) => soft_error = Some(reason),
                }
            }
            _ => {}
        }
    }
    if !saw_file {
        errors.push(missing(vec!["body".into(), "file".into()]));
    }
    if file_path.is_none() {
        errors.push(missing(vec!["body".into(), "file_path".into()]));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let (Some(user), Some(file_path)) = (user, file_path) else {
        return Err(ApiError::internal());
    };
    let w = user.workspace.clone();
    let fp = file_path.clone();
    let target = as_user(&user, move || resolve(&w, &fp, true)).await?;
    let target = target.map_err(|e| path_error(&e, &user.workspace))?;
    if let Some(reason) = soft_error {
        return Ok(upload_failed(&reason));
    }
    let Some((mut t, size)) = temp else {
        return Ok(upload_failed("no file data"));
    };
    let src = t.path.clone();
    let dst = target.clone();
    let w = user.workspace.clone();
    let res = as_user(&user, move || -> Result<(), String> {
        create_parents(&w, &dst).map_err(|e| match e {
            OpenError::Io(e) => io_reason(&e),
            _ => format!("cannot create the parent directories of {}", dst.display()),
        })?;
        if fs::metadata(&dst).is_ok_and(|m| m.is_dir()) {
            return Err(format!("Is a directory: {}", dst.display()));
        }
        match fs::rename(&src, &dst) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                // Copied through descriptors opened beneath W (a FIFO there is refused).
                let reason = |e: OpenError| match e {
                    OpenError::Io(e) => io_reason(&e),
                    _ => format!("cannot open {}", dst.display()),
                };
                let mut from = open_file(&w, &src, libc::O_RDONLY, None).map_err(reason)?;
                let mut to = open_file(&w, &dst, libc::O_WRONLY | libc::O_TRUNC, Some(0o644))
                    .map_err(reason)?;
                std::io::copy(&mut from, &mut to).map_err(|e| io_reason(&e))?;
                let _ = fs::remove_file(&src);
                Ok(())
            }
            Err(e) => Err(io_reason(&e)),
        }
    })
    .await?;
    match res {
        Ok(()) => {
            t.keep = true;
            Ok(ok(
                json!({"success": true, "message": "File uploaded successfully", "file_path": target,
                "size": size, "error": null}),
            ))
        }
        Err(reason) => Ok(upload_failed(&reason)),
    }
}

/// GET /download and /fs/download
pub async fn download(State(st): State<St>, headers: HeaderMap, req: Request) -> ApiResult {
    let sid = session_header(&headers);
    let mut errors: Vec<Value> = sid.as_ref().err().cloned().into_iter().collect();
    let file_path = crate::query_param(req.uri().query().unwrap_or(""), "file_path");
    if file_path.is_none() {
        errors.push(missing(vec!["query".into(), "file_path".into()]));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let (Ok(sid), Some(file_path)) = (sid, file_path) else {
        return Err(ApiError::internal());
    };
    let opened = in_workspace(&st, &sid, file_path, true, move |w, p| {
        let fail = io_failure("File download failed");
        let f = open_file(w, &p, libc::O_RDONLY, None)
            .map_err(|e| open_error(e, w, "File not found", "Path is not a file", fail))?;
        let meta = f.metadata().map_err(fail)?;
        Ok((p, f, meta))
    })
    .await?;
    let (p, mut f, meta) = opened;
    let size = meta.len();
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|r| parse_range(r, size));
    let (status, start, len) = match range {
        Some(Ok((a, b))) => (StatusCode::PARTIAL_CONTENT, a, b - a + 1),
        Some(Err(())) => {
            let mut r = err(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "Requested range not satisfiable",
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(r);
        }
        None => (StatusCode::OK, 0, size),
    };
    if start > 0 {
        f.seek(std::io::SeekFrom::Start(start))
            .map_err(io_failure("File download failed"))?;
    }
    let file = tokio::fs::File::from_std(f);
    let stream = tokio_util::io::ReaderStream::with_capacity(
        tokio::io::AsyncReadExt::take(file, len),
        64 << 10,
    );
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() && c != '"' && c != '\\' {
                c
            } else {
                '_'
            }
        })
        .collect();
    const ATTR: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    let pct = percent_encoding::utf8_percent_encode(&name, ATTR);
    let mtime = chrono::DateTime::from_timestamp(meta.mtime(), 0).unwrap_or_default();
    let mut res = Response::new(HttpBody::from_stream(stream));
    *res.status_mut() = status;
    let h = res.headers_mut();
    let mut set = |k: header::HeaderName, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    };
    set(header::CONTENT_TYPE, "application/octet-stream".into());
    set(header::CONTENT_LENGTH, len.to_string());
    set(
        header::CONTENT_DISPOSITION,
        format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{pct}"),
    );
    set(
        header::LAST_MODIFIED,
        mtime.format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
    );
    set(
        header::ETAG,
        format!(
            "\"{:x}-{:x}\"",
            meta.mtime() as u64 * 1_000_000_000 + meta.mtime_nsec() as u64,
            size
        ),
    );
    set(header::ACCEPT_RANGES, "bytes".into());
    if status == StatusCode::PARTIAL_CONTENT {
        set(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{size}", start + len - 1),
        );
    }
    Ok(res)
}

/// A single `bytes=a-b` range: `Some(Ok((first, last)))`, `Some(Err)` when unsatisfiable,
/// `None` when absent or not understood (the whole file is sent).
fn parse_range(r: &str, size: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = r.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 || size == 0 {
            return Some(Err(()));
        }
        (size.saturating_sub(n), size - 1)
    } else {
        let a: u64 = a.parse().ok()?;
        let b: u64 = if b.is_empty() {
            size.saturating_sub(1)
        } else {
            b.parse().ok()?
        };
        if a >= size || b < a {
            return Some(Err(()));
        }
        (a, b.min(size - 1))
    };
    Some(Ok(range))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_follows_slice_semantics() {
        let t = "a\nb\nc\n";
        assert_eq!(window(t, None, None), t);
        assert_eq!(window(t, Some(2), None), "b\nc\n");
        assert_eq!(window(t, Some(2), Some(1)), "b\n");
        assert_eq!(window(t, None, Some(0)), "");
        assert_eq!(window(t, Some(1), Some(-1)), "a\nb\n");
        assert_eq!(window(t, Some(0), Some(2)), "a\nb\n");
        assert_eq!(window(t, Some(10), None), "");
        assert_eq!(window(t, Some(1), Some(-10)), "");
        assert_eq!(window("x", None, None), "x");
    }

    #[test]
    fn newlines_are_normalised() {
        assert_eq!(normalise_newlines("a\r\nb\rc\n"), "a\nb\nc\n");
    }

    #[test]
    fn encodings_are_matched_case_insensitively() {
        assert!(matches!(encoding("UTF-8"), Ok(Encoding::Utf8)));
        assert!(matches!(encoding("Latin-1"), Ok(Encoding::Latin1)));
        assert!(matches!(encoding("ISO-8859-1"), Ok(Encoding::Latin1)));
        assert!(matches!(encoding("ascii"), Ok(Encoding::Ascii)));
        assert!(encoding("klingon").is_err());
        assert_eq!(decode(vec![0xe9], Encoding::Latin1).unwrap(), "é");
        assert!(decode(vec![0xe9], Encoding::Utf8).is_none());
        assert!(encode("é", Encoding::Ascii, "ascii").is_err());
    }

    #[test]
    fn ranges_are_parsed() {
        assert_eq!(parse_range("bytes=0-9", 100), Some(Ok((0, 9))));
        assert_eq!(parse_range("bytes=90-", 100), Some(Ok((90, 99))));
        assert_eq!(parse_range("bytes=-10", 100), Some(Ok((90, 99))));
        assert_eq!(parse_range("bytes=100-", 100), Some(Err(())));
        assert_eq!(parse_range("bytes=0-1,3-4", 100), None);
    }
}
