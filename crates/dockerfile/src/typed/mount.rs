//! `RUN --mount=...` read into fields: the CSV split (a field may be
//! double-quoted), each key known, values kept unexpanded. What the values
//! mean (types, defaults, modes, IDs) is the build's, after expansion, since
//! any value may hold a build arg.

/// One `--mount` flag: its fields in order, and where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    /// The flag's value as written (for messages).
    pub text: String,
    pub fields: Vec<MountField>,
    pub line: usize,
    pub column: usize,
}

/// A `key[=value]` of a mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountField {
    pub key: MountKey,
    /// The key as written, lowercased (`dst`, `ro`), for messages.
    pub name: String,
    /// The value, unexpanded; None for a bare key (`ro`, `required`).
    pub value: Option<super::Word>,
    /// The field as written, for messages.
    pub text: String,
}

/// The keys BuildKit's `--mount` takes (synonyms folded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountKey {
    Type,
    /// `target`, `dst`, `destination`.
    Target,
    /// `source`, `src`.
    Source,
    From,
    Id,
    /// `readonly`, `ro`.
    ReadOnly,
    /// `rw`, `readwrite`.
    ReadWrite,
    Required,
    Sharing,
    Mode,
    Uid,
    Gid,
    Size,
    Env,
}

impl MountKey {
    fn of(name: &str) -> Option<MountKey> {
        use MountKey::*;
        Some(match name {
            "type" => Type,
            "target" | "dst" | "destination" => Target,
            "source" | "src" => Source,
            "from" => From,
            "id" => Id,
            "readonly" | "ro" => ReadOnly,
            "rw" | "readwrite" => ReadWrite,
            "required" => Required,
            "sharing" => Sharing,
            "mode" => Mode,
            "uid" => Uid,
            "gid" => Gid,
            "size" => Size,
            "env" => Env,
            _ => return None,
        })
    }

    /// Keys that mean something bare (a boolean).
    fn may_be_bare(self) -> bool {
        matches!(
            self,
            MountKey::ReadOnly | MountKey::ReadWrite | MountKey::Required
        )
    }
}

impl MountSpec {
    /// Read one `--mount` value. Errors say which field is wrong and why.
    pub(crate) fn read(text: &str, line: usize, column: usize) -> Result<MountSpec, String> {
        let mut fields = Vec::new();
        for field in split_fields(text)? {
            let (name, value) = match field.split_once('=') {
                Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.to_string())),
                None => (field.trim().to_ascii_lowercase(), None),
            };
            let key = MountKey::of(&name)
                .ok_or_else(|| format!("unknown field {name:?} in {field:?}"))?;
            if value.is_none() && !key.may_be_bare() {
                return Err(format!("{name}: expected {name}=VALUE in {field:?}"));
            }
            fields.push(MountField {
                key,
                name,
                value: value.map(super::Word),
                text: field,
            });
        }
        Ok(MountSpec {
            text: text.to_string(),
            fields,
            line,
            column,
        })
    }

    /// The unexpanded `from=` of this mount, if any.
    pub fn from(&self) -> Option<&str> {
        self.fields
            .iter()
            .find(|f| f.key == MountKey::From)
            .and_then(|f| f.value.as_ref())
            .map(|w| w.raw())
    }
}

/// Split a comma-separated list of fields the way a CSV reader does: a field
/// may be double-quoted (then commas are literal, `""` is a quote).
fn split_fields(value: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = value.chars().peekable();
    let mut at_field_start = true;
    while let Some(c) = chars.next() {
        match c {
            '"' if at_field_start => {
                loop {
                    match chars.next() {
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            field.push('"');
                        }
                        Some('"') => break,
                        Some(c) => field.push(c),
                        None => return Err(format!("unterminated quote in {value:?}")),
                    }
                }
                at_field_start = false;
            }
            ',' => {
                fields.push(std::mem::take(&mut field));
                at_field_start = true;
            }
            c => {
                // A quote inside key="value" opens a quoted value.
                if c == '=' && chars.peek() == Some(&'"') {
                    field.push('=');
                    at_field_start = true;
                    continue;
                }
                field.push(c);
                at_field_start = false;
            }
        }
    }
    fields.push(field);
    Ok(fields.into_iter().filter(|f| !f.is_empty()).collect())
}
