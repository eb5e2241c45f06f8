//! Human output: aligned tables, relative times, colours only on a terminal (NO_COLOR
//! respected), a spinner on a terminal; and JSON for scripts.

use std::io::IsTerminal;
use std::time::Duration;

use bay_api_types::{SessionResponse, ShipResponse};
use bay_core::model::{ShipStatus, Timestamp};
use serde::Serialize;

/// Whether stdout gets colours.
pub fn colours() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Pretty JSON of an API body.
pub fn print_json<T: Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("bay: cannot write JSON: {e}"),
    }
}

/// `3m ago`, `in 2h`, `now`.
pub fn relative(t: Timestamp, now: Timestamp) -> String {
    let diff = (t.micros() - now.micros()) / 1_000_000;
    let secs = diff.unsigned_abs();
    let amount = match secs {
        0..=1 => return "now".to_owned(),
        2..=119 => format!("{secs}s"),
        120..=7199 => format!("{}m", secs / 60),
        7200..=172_799 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    };
    if diff < 0 {
        format!("{amount} ago")
    } else {
        format!("in {amount}")
    }
}

/// A status word, coloured when `colour`.
pub fn status(s: ShipStatus, colour: bool) -> String {
    let (word, code) = match s {
        ShipStatus::Running => ("running", "32"),
        ShipStatus::Stopped => ("stopped", "2"),
        ShipStatus::Creating => ("creating", "33"),
    };
    paint(word, code, colour)
}

fn paint(text: &str, code: &str, colour: bool) -> String {
    if colour {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

/// Prints rows under a bold header, columns padded to their widest cell (ANSI codes ignored).
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let colour = colours();
    let visible = |s: &str| {
        let mut n = 0;
        let mut in_escape = false;
        for c in s.chars() {
            match (in_escape, c) {
                (false, '\x1b') => in_escape = true,
                (true, 'm') => in_escape = false,
                (false, _) => n += 1,
                _ => {}
            }
        }
        n
    };
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(visible(cell));
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            out.push_str(cell);
            if i < last {
                out.push_str(&" ".repeat(widths[i] - visible(cell) + 2));
            }
        }
        println!("{out}");
    };
    line(header.iter().map(|h| paint(h, "1", colour)).collect());
    for row in rows {
        line(row.clone());
    }
}

/// Ships as a table.
pub fn ships(list: &[ShipResponse]) {
    let colour = colours();
    let now = Timestamp::now();
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            vec![
                s.id.clone(),
                status(s.status, colour),
                format!("{}/{}", s.current_session_num, s.max_session_num),
                relative(s.created_at, now),
                s.expires_at
                    .map_or_else(|| "-".to_owned(), |t| relative(t, now)),
                s.ip_address.clone().unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    table(
        &["ID", "STATUS", "SESSIONS", "CREATED", "EXPIRES", "ADDRESS"],
        &rows,
    );
}

/// Sessions as a table.
pub fn sessions(list: &[SessionResponse]) {
    let colour = colours();
    let now = Timestamp::now();
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            vec![
                s.session_id.clone(),
                s.ship_id.clone(),
                if s.is_active {
                    paint("active", "32", colour)
                } else {
                    paint("expired", "2", colour)
                },
                relative(s.last_activity, now),
                relative(s.expires_at, now),
            ]
        })
        .collect();
    table(&["SESSION", "SHIP", "STATE", "LAST USED", "EXPIRES"], &rows);
}

/// A spinner on stderr while `work` runs, only when stderr is a terminal.
pub async fn spinning<T>(message: &str, work: impl Future<Output = T>) -> T {
    if !std::io::stderr().is_terminal() {
        return work.await;
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_message(message.to_owned());
    bar.enable_steady_tick(Duration::from_millis(100));
    let out = work.await;
    bar.finish_and_clear();
    out
}

/// A byte progress bar on stderr when it is a terminal; hidden otherwise.
pub fn progress(length: Option<u64>) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = match length {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new_spinner(),
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:30} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_read_like_people_say_them() {
        let now = Timestamp::from_micros(1_000_000_000_000_000);
        assert_eq!(relative(now, now), "now");
        assert_eq!(relative(now.plus_secs(-90), now), "90s ago");
        assert_eq!(relative(now.plus_secs(600), now), "in 10m");
        assert_eq!(relative(now.plus_secs(3 * 86_400), now), "in 3d");
    }
}
