//! Test guest for the capability interfaces (`secrets`, `vault`, `auth`),
//! driven like `probe`: each event's payload is a command, and the outcome is
//! published as `capable.result` (`ok:...` or `err:...`).
//!
//! Commands (arguments separated by single spaces; `-` means "none"):
//! `secret NAME`, `vault-put NS NAME TEXT`, `vault-get NS NAME`,
//! `vault-del NS NAME`, `vault-list NS`, `hash PASSWORD`,
//! `verify PASSWORD PHC`, `issue SUB AUD EXP [NBF]`, `check TOKEN AUD`.

wit_bindgen::generate!({ world: "agent", path: "../../wit", generate_all });

use exports::toka::runtime::handler::Guest;
use toka::runtime::auth;
use toka::runtime::bus::publish;
use toka::runtime::secrets;
use toka::runtime::types::{Error, Event};
use toka::runtime::vault;

struct Capable;

fn describe(err: Error) -> String {
    match err {
        Error::AccessDenied => "access-denied".into(),
        Error::TooLarge(n) => format!("too-large:{n}"),
        Error::RateLimited => "rate-limited".into(),
        Error::Invalid(msg) => format!("invalid:{msg}"),
        Error::Unavailable => "unavailable".into(),
    }
}

fn opt(word: &str) -> Option<String> {
    (word != "-").then(|| word.to_string())
}

fn run(command: &str) -> Result<String, Error> {
    let words: Vec<&str> = command.split(' ').collect();
    let arg = |i: usize| words.get(i).copied().unwrap_or("-");
    Ok(match words[0] {
        "secret" => String::from_utf8_lossy(&secrets::get(arg(1))?).into_owned(),
        "vault-put" => {
            let entry = vault::put(
                opt(arg(1)).as_deref(),
                arg(2),
                "text/plain",
                arg(3).as_bytes(),
            )?;
            format!("{}:{}", entry.name, entry.size)
        }
        "vault-get" => match vault::get(opt(arg(1)).as_deref(), arg(2))? {
            Some((entry, data)) => {
                format!("{}:{}", entry.sha256.len(), String::from_utf8_lossy(&data))
            }
            None => "none".into(),
        },
        "vault-del" => vault::delete(opt(arg(1)).as_deref(), arg(2))?.to_string(),
        "vault-list" => vault::list(opt(arg(1)).as_deref())?
            .iter()
            .map(|e| e.name.as_str())
            .collect::<Vec<_>>()
            .join(","),
        "hash" => auth::hash_password(arg(1))?,
        "verify" => auth::verify_password(arg(1), arg(2))?.to_string(),
        "issue" => auth::issue_token(&auth::Claims {
            sub: arg(1).into(),
            aud: opt(arg(2)),
            exp: arg(3).parse().unwrap_or(0),
            nbf: words.get(4).and_then(|n| n.parse().ok()),
            iat: 0,
            extra_json: r#"{"role":"reader"}"#.into(),
        })?,
        "check" => {
            let c = auth::verify_token(arg(1), opt(arg(2)).as_deref())?;
            format!("{}:{}", c.sub, c.extra_json)
        }
        other => return Err(Error::Invalid(format!("unknown command `{other}`"))),
    })
}

impl Guest for Capable {
    fn init(_config: Vec<(String, String)>) -> Result<(), String> {
        Ok(())
    }

    fn handle(event: Event) -> Result<(), String> {
        let command = String::from_utf8_lossy(&event.payload).into_owned();
        let text = match run(&command) {
            Ok(ok) => format!("ok:{ok}"),
            Err(err) => format!("err:{}", describe(err)),
        };
        publish("capable.result", text.as_bytes()).map_err(|e| format!("{e:?}"))?;
        Ok(())
    }
}

export!(Capable);
