//! Recipes: parsing, validation and the builtin recipes.
//!
//! Owns the TOML format (`#[serde(deny_unknown_fields)]`), name validation and
//! resolving `[[files]]` sources relative to the recipe. It does no building and
//! never touches the image home.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::ImageError;

/// Builtin recipes, embedded at compile time: (name, TOML text).
const BUILTINS: &[(&str, &str)] = &[("python", include_str!("../../../images/python.toml"))];

/// The recipe used when `zygote image build` is given no argument.
pub const DEFAULT_RECIPE: &str = "python";

/// Longest accepted package name list entry (Debian policy allows far less).
const MAX_PACKAGE_LEN: usize = 128;

/// A parsed, validated image recipe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipe {
    /// Image name, `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`.
    pub name: String,
    /// Debian release (suite), e.g. `bookworm`.
    pub release: String,
    /// Extra packages for `debootstrap --include`.
    pub packages: Vec<String>,
    /// Python code the warm interpreter runs (metadata only; used by the engine).
    pub warmup: Option<String>,
    /// ext4 size in MiB; default is content size plus headroom.
    pub disk_mib: Option<u64>,
    /// Host files copied into the guest.
    pub files: Vec<RecipeFile>,
    /// Where the recipe came from: a file path, or `builtin:NAME`.
    pub source: PathBuf,
}

/// One `[[files]]` entry, with `src` already resolved to an absolute host path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipeFile {
    /// Host path (resolved against the recipe's directory).
    pub src: PathBuf,
    /// Absolute path in the guest.
    pub dst: String,
    /// File mode; default 0o644 (0o755 if the host file is executable).
    pub mode: Option<u32>,
}

/// The on-disk TOML shape.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecipe {
    name: String,
    release: String,
    #[serde(default)]
    packages: Vec<String>,
    warmup: Option<String>,
    disk_mib: Option<u64>,
    #[serde(default)]
    files: Vec<RawFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    src: PathBuf,
    dst: String,
    mode: Option<u32>,
}

/// Names of the builtin recipes.
pub fn builtin_names() -> Vec<&'static str> {
    BUILTINS.iter().map(|(n, _)| *n).collect()
}

/// Loads a recipe: `None` is the builtin `python`; a builtin's name loads that
/// builtin; anything else is a path to a TOML file.
pub fn load_recipe(arg: Option<&str>) -> Result<Recipe, ImageError> {
    let arg = arg.unwrap_or(DEFAULT_RECIPE);
    if let Some((name, text)) = BUILTINS.iter().find(|(n, _)| *n == arg) {
        // Builtins have no [[files]]; relative paths would resolve against the cwd.
        let source = PathBuf::from(format!("builtin:{name}"));
        return parse_recipe(text, &source, Path::new("."));
    }
    let path = PathBuf::from(arg);
    if !path.is_file() {
        return Err(ImageError::RecipeNotFound {
            arg: arg.to_string(),
            builtins: builtin_names().join(", "),
        });
    }
    let text = std::fs::read_to_string(&path).map_err(ImageError::io("read recipe", &path))?;
    let path = std::path::absolute(&path).map_err(ImageError::io("resolve recipe path", &path))?;
    let dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
    parse_recipe(&text, &path, &dir)
}

/// Parses and validates recipe text. `source` names it in errors; relative
/// `[[files]]` sources resolve against `base_dir`.
pub fn parse_recipe(text: &str, source: &Path, base_dir: &Path) -> Result<Recipe, ImageError> {
    let raw: RawRecipe = toml::from_str(text).map_err(|e| ImageError::RecipeParse {
        path: source.to_path_buf(),
        message: e.message().to_string() + &span_hint(text, e.span()),
    })?;
    let invalid = |message: String| ImageError::RecipeInvalid {
        path: source.to_path_buf(),
        message,
    };
    validate_name(&raw.name)?;
    if !is_token(&raw.release, 64) || !raw.release.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(invalid(format!(
            "release `{}` is not a Debian release name: use e.g. `bookworm`",
            raw.release
        )));
    }
    let mut packages = Vec::with_capacity(raw.packages.len());
    for p in raw.packages {
        if !is_package_name(&p) {
            return Err(invalid(format!(
                "package `{p}` is not a valid Debian package name: use lowercase letters, digits and + - ."
            )));
        }
        if !packages.contains(&p) {
            packages.push(p);
        }
    }
    if raw.disk_mib == Some(0) {
        return Err(invalid(
            "disk_mib = 0: remove it for an automatic size or give MiB".into(),
        ));
    }
    let mut files = Vec::with_capacity(raw.files.len());
    for f in raw.files {
        if !f.dst.starts_with('/') || f.dst.ends_with('/') || f.dst.split('/').any(|c| c == "..") {
            return Err(invalid(format!(
                "[[files]] dst `{}` must be an absolute guest file path without `..`",
                f.dst
            )));
        }
        if let Some(mode) = f.mode {
            if mode > 0o7777 {
                return Err(invalid(format!(
                    "[[files]] mode {mode:#o} for `{}` is not a file mode: use e.g. 0o644",
                    f.dst
                )));
            }
        }
        let src = if f.src.is_absolute() {
            f.src
        } else {
            base_dir.join(f.src)
        };
        if !src.is_file() {
            return Err(ImageError::MissingFile {
                recipe: source.to_path_buf(),
                src,
                dst: f.dst,
            });
        }
        files.push(RecipeFile {
            src,
            dst: f.dst,
            mode: f.mode,
        });
    }
    Ok(Recipe {
        name: raw.name,
        release: raw.release,
        packages,
        warmup: raw.warmup,
        disk_mib: raw.disk_mib,
        files,
        source: source.to_path_buf(),
    })
}

/// Checks an image name: `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`.
pub fn validate_name(name: &str) -> Result<(), ImageError> {
    let ok = name.starts_with(|c: char| c.is_ascii_alphanumeric()) && is_token(name, 64);
    if ok {
        Ok(())
    } else {
        Err(ImageError::BadName {
            name: name.to_string(),
        })
    }
}

fn is_token(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn is_package_name(p: &str) -> bool {
    p.len() >= 2
        && p.len() <= MAX_PACKAGE_LEN
        && p.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && p.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
}

/// " (line N)" for a TOML error span, so the user can find the bad key.
fn span_hint(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(r) if r.start <= text.len() => {
            let line = text[..r.start].bytes().filter(|b| *b == b'\n').count() + 1;
            format!(" (line {line})")
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Recipe, ImageError> {
        parse_recipe(text, Path::new("/r/test.toml"), Path::new("/r"))
    }

    #[test]
    fn builtin_python_loads() {
        let r = load_recipe(None).expect("builtin loads");
        assert_eq!(r.name, "python");
        assert_eq!(r.release, "bookworm");
        assert!(r.packages.contains(&"python3".to_string()));
        assert!(r.warmup.is_some());
        assert_eq!(load_recipe(Some("python")).expect("by name"), r);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse("name = \"a\"\nrelease = \"bookworm\"\npackagez = [\"x\"]\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("packagez"), "{msg}");
        assert!(msg.contains("line 3"), "{msg}");
        assert!(msg.contains("/r/test.toml"), "{msg}");
    }

    #[test]
    fn unknown_key_in_files_is_named() {
        let err = parse("name = \"a\"\nrelease = \"bookworm\"\n[[files]]\nsrc = \"/etc/hostname\"\ndst = \"/x\"\nowner = 1\n")
            .unwrap_err();
        assert!(err.to_string().contains("owner"), "{err}");
    }

    #[test]
    fn bad_names_rejected() {
        for bad in ["", "-a", ".a", "a/b", "a b", "é", &"a".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["a", "python", "py-3.11_x", &"a".repeat(64), "9"] {
            validate_name(good).expect(good);
        }
        let err = parse("name = \"../x\"\nrelease = \"bookworm\"\n").unwrap_err();
        assert!(err.to_string().contains("`../x`"), "{err}");
    }

    #[test]
    fn missing_file_names_path() {
        let err = parse("name = \"a\"\nrelease = \"bookworm\"\n[[files]]\nsrc = \"nope/file.txt\"\ndst = \"/etc/x\"\n")
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/r/nope/file.txt"), "{msg}");
        assert!(matches!(err, ImageError::MissingFile { .. }));
    }

    #[test]
    fn relative_files_resolve_against_recipe_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("motd"), "hi").expect("write");
        let rpath = dir.path().join("r.toml");
        std::fs::write(
            &rpath,
            "name = \"a\"\nrelease = \"bookworm\"\n[[files]]\nsrc = \"motd\"\ndst = \"/etc/motd\"\nmode = 0o600\n",
        )
        .expect("write");
        let r = load_recipe(rpath.to_str()).expect("loads");
        assert_eq!(r.files[0].src, dir.path().join("motd"));
        assert_eq!(r.files[0].mode, Some(0o600));
    }

    #[test]
    fn bad_values_rejected() {
        let cases = [
            "name = \"a\"\nrelease = \"Book worm\"\n",
            "name = \"a\"\nrelease = \"bookworm\"\npackages = [\"Python3\"]\n",
            "name = \"a\"\nrelease = \"bookworm\"\npackages = [\"a;rm\"]\n",
            "name = \"a\"\nrelease = \"bookworm\"\ndisk_mib = 0\n",
            "name = \"a\"\nrelease = \"bookworm\"\n[[files]]\nsrc = \"/etc/hostname\"\ndst = \"etc/x\"\n",
            "name = \"a\"\nrelease = \"bookworm\"\n[[files]]\nsrc = \"/etc/hostname\"\ndst = \"/a/../b\"\n",
            "name = \"a\"\n",
        ];
        for c in cases {
            assert!(parse(c).is_err(), "accepted: {c}");
        }
    }

    #[test]
    fn unknown_recipe_arg() {
        let err = load_recipe(Some("no-such-recipe-xyz")).unwrap_err();
        assert!(err.to_string().contains("python"), "{err}");
    }

    #[test]
    fn duplicate_packages_dropped() {
        let r = parse("name = \"a\"\nrelease = \"bookworm\"\npackages = [\"curl\", \"curl\"]\n")
            .expect("ok");
        assert_eq!(r.packages, vec!["curl".to_string()]);
    }
}
