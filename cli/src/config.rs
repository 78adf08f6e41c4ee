//! Connection settings: the `key = value` config file and how it combines with
//! flags and environment variables (flag > env > file > built-in default).
//!
//! clap already folds env vars into the flag values, so here a flag value of
//! `Some` means "flag or env"; the file only fills what is still `None`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};

use crate::output::Format;

/// Address used when neither flag, env nor file set one.
pub const DEFAULT_ADDR: &str = "http://127.0.0.1:7443";

/// Keys the config file understands; anything else is an error so typos do
/// not silently fall back to defaults.
const KEYS: &[&str] = &["addr", "token", "token_file", "ca_cert", "output"];

/// The values given on the command line or via env (clap's view).
#[derive(Clone, Default)]
pub struct Overrides {
    pub addr: Option<String>,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    pub ca_cert: Option<PathBuf>,
    pub output: Option<Format>,
}

/// A parsed config file.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct FileConfig {
    pub addr: Option<String>,
    pub token: Option<String>,
    /// Relative paths are taken relative to the config file's directory.
    pub token_file: Option<PathBuf>,
    pub ca_cert: Option<PathBuf>,
    pub output: Option<Format>,
}

// Hand-written so the token can never reach a log or error via `{:?}`.
impl fmt::Debug for FileConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileConfig")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .field("ca_cert", &self.ca_cert)
            .field("output", &self.output)
            .finish()
    }
}

/// Where the token comes from, kept until it is needed so that commands that
/// never call the server do not fail on an unreadable token file.
#[derive(Clone, PartialEq, Eq)]
pub enum TokenSource {
    None,
    Literal(String),
    File(PathBuf),
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSource::None => f.write_str("None"),
            TokenSource::Literal(_) => f.write_str("Literal(<redacted>)"),
            TokenSource::File(p) => write!(f, "File({})", p.display()),
        }
    }
}

impl TokenSource {
    /// The bearer secret, if any. Files are trimmed (a trailing newline is normal).
    pub fn load(&self) -> anyhow::Result<Option<String>> {
        match self {
            TokenSource::None => Ok(None),
            TokenSource::Literal(t) => Ok(Some(t.trim().to_string()).filter(|t| !t.is_empty())),
            TokenSource::File(p) => {
                let raw = std::fs::read_to_string(p)
                    .with_context(|| format!("reading token file {}", p.display()))?;
                let t = raw.trim();
                if t.is_empty() {
                    bail!("token file {} is empty", p.display());
                }
                Ok(Some(t.to_string()))
            }
        }
    }
}

/// The effective settings after combining all sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub addr: String,
    pub token: TokenSource,
    pub ca_cert: Option<PathBuf>,
    pub output: Format,
}

/// Combines flags/env with the file. The token is chosen by source first
/// (flag/env beats file), then `token` beats `token_file` within a source, so
/// `MTP_TOKEN_FILE=...` still overrides a `token = ...` line in the file.
pub fn resolve(cli: &Overrides, file: &FileConfig) -> Settings {
    let token = if let Some(t) = &cli.token {
        TokenSource::Literal(t.clone())
    } else if let Some(p) = &cli.token_file {
        TokenSource::File(p.clone())
    } else if let Some(t) = &file.token {
        TokenSource::Literal(t.clone())
    } else if let Some(p) = &file.token_file {
        TokenSource::File(p.clone())
    } else {
        TokenSource::None
    };
    Settings {
        addr: cli
            .addr
            .clone()
            .or_else(|| file.addr.clone())
            .unwrap_or_else(|| DEFAULT_ADDR.to_string()),
        token,
        ca_cert: cli.ca_cert.clone().or_else(|| file.ca_cert.clone()),
        output: cli.output.or(file.output).unwrap_or(Format::Table),
    }
}

/// The default config file: `$HOME/.config/mtp/config`.
pub fn default_path() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".config/mtp/config"))
}

/// Loads the config file. An explicitly named file must exist; the default
/// one is optional.
pub fn load(explicit: Option<&Path>) -> anyhow::Result<FileConfig> {
    let (path, required) = match explicit {
        Some(p) => (p.to_path_buf(), true),
        None => match default_path() {
            Some(p) => (p, false),
            None => return Ok(FileConfig::default()),
        },
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
            return Ok(FileConfig::default());
        }
        Err(e) => return Err(e).with_context(|| format!("reading config file {}", path.display())),
    };
    let base = path.parent().unwrap_or(Path::new("."));
    parse(&text, base).with_context(|| format!("config file {}", path.display()))
}

/// Parses `key = value` lines. `#` starts a comment line; values may be
/// wrapped in double or single quotes; later lines override earlier ones.
pub fn parse(text: &str, base_dir: &Path) -> anyhow::Result<FileConfig> {
    let mut map = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| anyhow!("line {n}: expected `key = value`"))?;
        let key = key.trim();
        if !KEYS.contains(&key) {
            bail!("line {n}: unknown key {key:?} (known: {})", KEYS.join(", "));
        }
        let value = unquote(value.trim());
        if value.is_empty() {
            bail!("line {n}: empty value for {key:?}");
        }
        map.insert(key.to_string(), value.to_string());
    }
    let path = |v: &String| {
        let p = PathBuf::from(v);
        if p.is_relative() { base_dir.join(p) } else { p }
    };
    let output = match map.get("output") {
        None => None,
        Some(v) => Some(
            Format::parse(v)
                .ok_or_else(|| anyhow!("output: expected `table` or `json`, got {v:?}"))?,
        ),
    };
    Ok(FileConfig {
        addr: map.get("addr").cloned(),
        token: map.get("token").cloned(),
        token_file: map.get("token_file").map(path),
        ca_cert: map.get("ca_cert").map(path),
        output,
    })
}

fn unquote(v: &str) -> &str {
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return &v[1..v.len() - 1];
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> &'static Path {
        Path::new("/etc/mtp")
    }

    #[test]
    fn parses_keys_comments_quotes_and_relative_paths() {
        let text = "\n# comment\naddr = https://mtp.example:7443\ntoken_file = token\n\
                    ca_cert = \"/abs/ca.pem\"\noutput='json'\n";
        let c = parse(text, base()).unwrap();
        assert_eq!(c.addr.as_deref(), Some("https://mtp.example:7443"));
        assert_eq!(c.token_file, Some(PathBuf::from("/etc/mtp/token")));
        assert_eq!(c.ca_cert, Some(PathBuf::from("/abs/ca.pem")));
        assert_eq!(c.output, Some(Format::Json));
        assert_eq!(c.token, None);
    }

    #[test]
    fn later_lines_win_and_values_may_contain_equals() {
        let c = parse("token = a\ntoken = b==c\n", base()).unwrap();
        assert_eq!(c.token.as_deref(), Some("b==c"));
    }

    #[test]
    fn rejects_unknown_keys_bad_lines_and_bad_output() {
        let e = parse("adr = x", base()).unwrap_err().to_string();
        assert!(e.contains("line 1: unknown key \"adr\""), "{e}");
        let e = parse("\naddr", base()).unwrap_err().to_string();
        assert!(e.contains("line 2: expected `key = value`"), "{e}");
        assert!(parse("output = yaml", base()).is_err());
        assert!(parse("addr = ", base()).is_err());
    }

    #[test]
    fn debug_never_shows_the_token() {
        let c = parse("token = s3cret", base()).unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
        let s = resolve(&Overrides::default(), &c);
        assert!(!format!("{s:?}").contains("s3cret"));
    }

    #[test]
    fn defaults_when_nothing_is_set() {
        let s = resolve(&Overrides::default(), &FileConfig::default());
        assert_eq!(s.addr, DEFAULT_ADDR);
        assert_eq!(s.token, TokenSource::None);
        assert_eq!(s.output, Format::Table);
        assert_eq!(s.ca_cert, None);
    }

    #[test]
    fn flags_and_env_override_the_file() {
        let file = parse(
            "addr = http://file:1\ntoken = filetok\noutput = json\nca_cert = /f/ca.pem",
            base(),
        )
        .unwrap();
        let cli = Overrides {
            addr: Some("http://flag:2".into()),
            output: Some(Format::Table),
            ..Default::default()
        };
        let s = resolve(&cli, &file);
        assert_eq!(s.addr, "http://flag:2");
        assert_eq!(s.output, Format::Table);
        // Not given on the command line: the file's values stay.
        assert_eq!(s.token, TokenSource::Literal("filetok".into()));
        assert_eq!(s.ca_cert, Some(PathBuf::from("/f/ca.pem")));
    }

    #[test]
    fn token_precedence_is_by_source_first() {
        let file = parse("token = filetok\ntoken_file = /f/tok", base()).unwrap();
        // Inside the file, `token` beats `token_file`.
        assert_eq!(
            resolve(&Overrides::default(), &file).token,
            TokenSource::Literal("filetok".into())
        );
        // A token file from flag/env beats a literal token in the file.
        let cli = Overrides {
            token_file: Some("/cli/tok".into()),
            ..Default::default()
        };
        assert_eq!(
            resolve(&cli, &file).token,
            TokenSource::File("/cli/tok".into())
        );
        // And a literal flag/env token beats everything.
        let cli = Overrides {
            token: Some("clitok".into()),
            token_file: Some("/cli/tok".into()),
            ..Default::default()
        };
        assert_eq!(
            resolve(&cli, &file).token,
            TokenSource::Literal("clitok".into())
        );
    }

    #[test]
    fn token_file_is_trimmed_and_must_not_be_empty() {
        let dir = std::env::temp_dir().join(format!("mtp-cli-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("tok");
        std::fs::write(&p, "abc123\n").unwrap();
        assert_eq!(
            TokenSource::File(p.clone()).load().unwrap().as_deref(),
            Some("abc123")
        );
        std::fs::write(&p, "  \n").unwrap();
        assert!(TokenSource::File(p).load().is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn explicit_config_must_exist() {
        let missing = Path::new("/nonexistent/mtp/config");
        assert!(load(Some(missing)).is_err());
    }
}
