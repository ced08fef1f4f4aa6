//! `wasmgate new NAME [--lang rust|ts|js|python]`: a project that works end
//! to end. It has the layout the other commands default to
//! (`config/wasmgate.toml`, component sources in `handlers/`), so `cd NAME
//! && wasmgate dev` builds and serves it. Each language's project pins its
//! toolchain (rust-toolchain.toml, package.json, requirements.txt), which
//! its first build installs inside the project; the templates are files in
//! `gateway/templates/`, compiled in.
//!
//! Invariant: nothing is overwritten; a name that is not a valid handler
//! and crate name, an unknown language, or a directory that exists, is
//! refused before anything is written.

use std::path::Path;

/// The Rust toolchain a new project pins (the one this gateway is built
/// and tested with); rustup installs it, with the guest target, on the
/// project's first build.
const RUST_TOOLCHAIN: &str = "1.95.0";
/// The WASI 0.2 bindings a new Rust component pins.
const WASIP2: &str = "2.0.1";

/// The WASI 0.2 WIT packages a Python component is built against.
const WASI_WIT: [(&str, &str); 7] = [
    ("cli.wit", include_str!("../../templates/wasi-wit/cli.wit")),
    (
        "clocks.wit",
        include_str!("../../templates/wasi-wit/clocks.wit"),
    ),
    (
        "filesystem.wit",
        include_str!("../../templates/wasi-wit/filesystem.wit"),
    ),
    (
        "http.wit",
        include_str!("../../templates/wasi-wit/http.wit"),
    ),
    ("io.wit", include_str!("../../templates/wasi-wit/io.wit")),
    (
        "random.wit",
        include_str!("../../templates/wasi-wit/random.wit"),
    ),
    (
        "sockets.wit",
        include_str!("../../templates/wasi-wit/sockets.wit"),
    ),
];

/// Writes a new project called `name` into the directory `name`, for `lang`
/// (rust, ts, js or python); returns what to run next.
pub fn create(name: &str, lang: &str) -> Result<String, String> {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        return Err(format!(
            "`{name}` is not a project name: lowercase letters, digits and `-`, starting with a letter"
        ));
    }
    let (files, language) = match lang {
        "rust" => (rust(name), "a Rust component"),
        "python" => (python(name), "a Python component"),
        "js" => (npm(name, Npm::Js), "a JavaScript component"),
        "ts" => (npm(name, Npm::Ts), "a TypeScript component"),
        _ => {
            return Err(format!(
                "--lang {lang}: the languages are rust, ts, js and python"
            ));
        }
    };
    let root = Path::new(name);
    if root.exists() {
        return Err(format!("{name} already exists; nothing was written"));
    }
    for (path, text) in files {
        let path = root.join(path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
        }
        std::fs::write(&path, text)
            .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
    }
    Ok(format!(
        "created {name}/ ({language}, handlers/{name})\n\
         next: cd {name} && wasmgate dev, then curl http://127.0.0.1:8080/"
    ))
}

/// A file of the project: its path inside it and its text.
type File = (String, String);

fn rust(name: &str) -> Vec<File> {
    vec![
        ("README.md".into(), readme(name, Lang::Rust)),
        (
            ".gitignore".into(),
            "/handlers/target/\n/handlers/wasm/\n".into(),
        ),
        (
            "rust-toolchain.toml".into(),
            format!(
                "# The toolchain this project builds with; rustup installs it (and the\n\
                 # component target) on the first build.\n\
                 [toolchain]\nchannel = \"{RUST_TOOLCHAIN}\"\ntargets = [\"wasm32-wasip2\"]\n"
            ),
        ),
        ("config/wasmgate.toml".into(), config(name)),
        (
            "handlers/Cargo.toml".into(),
            format!(
                "# The project's components, each built for wasm32-wasip2 by `wasmgate build`.\n\
                 [workspace]\nresolver = \"3\"\nmembers = [\"{name}\"]\n\n\
                 [profile.release]\nopt-level = \"s\"\nlto = true\ncodegen-units = 1\nstrip = true\n"
            ),
        ),
        (
            format!("handlers/{name}/Cargo.toml"),
            format!(
                "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
                 [lib]\ncrate-type = [\"cdylib\"]\n\n\
                 [dependencies]\nwasip2 = \"={WASIP2}\"\n"
            ),
        ),
        (
            format!("handlers/{name}/src/lib.rs"),
            filled(include_str!("../../templates/rust/lib.rs"), name),
        ),
    ]
}

/// A template file with the project's name filled in.
fn filled(template: &str, name: &str) -> String {
    template.replace("{{name}}", name)
}

fn python(name: &str) -> Vec<File> {
    let mut files = vec![
        ("README.md".to_string(), readme(name, Lang::Python)),
        (".gitignore".to_string(), IGNORED.to_string()),
        ("config/wasmgate.toml".to_string(), config(name)),
        (
            format!("handlers/{name}/app.py"),
            filled(include_str!("../../templates/python/app.py"), name),
        ),
        (
            format!("handlers/{name}/requirements.txt"),
            include_str!("../../templates/python/requirements.txt").to_string(),
        ),
        (
            format!("handlers/{name}/wit/app.wit"),
            include_str!("../../templates/python/app.wit").to_string(),
        ),
    ];
    files.extend(WASI_WIT.iter().map(|(file, text)| {
        (
            format!("handlers/{name}/wit/deps/{file}"),
            (*text).to_string(),
        )
    }));
    files
}

/// What the non-Rust projects' builds make and install.
const IGNORED: &str = "/handlers/wasm/\ntarget/\nnode_modules/\n.venv/\n__pycache__/\n";

fn config(name: &str) -> String {
    format!(
        "# Served by `wasmgate dev` (build, serve, rebuild on edit) or `wasmgate serve`.\n\
         [gateway]\nhandlers_dir = \"../handlers/wasm\"\n\n\
         [[listener]]\naddr = \"127.0.0.1:8080\"\n\n\
         [admin]\naddr = \"127.0.0.1:9090\"\n\n\
         [handler.{name}]\nlimits = {{ timeout = \"10s\", memory = \"64MiB\" }}\n\n\
         [[route]]\npath = \"/*\"\nhandler = \"{name}\"\n"
    )
}

/// The languages a project can start in.
#[derive(Clone, Copy)]
enum Lang {
    Rust,
    Python,
    Js,
    Ts,
}

fn readme(name: &str, lang: Lang) -> String {
    let (language, needs, add) = match lang {
        Lang::Rust => (
            "Rust, built for `wasm32-wasip2`",
            "rustup (it installs the pinned toolchain of `rust-toolchain.toml`)",
            "a crate in `handlers/` (list it in `handlers/Cargo.toml`)",
        ),
        Lang::Python => (
            "Python, built with componentize-py against the WIT in `wit/`",
            "python3 (the first build installs the pinned componentize-py of `requirements.txt` into `handlers/NAME/.venv`)",
            "a directory in `handlers/` with `app.py`, `requirements.txt` and `wit/`",
        ),
        Lang::Js => (
            "JavaScript, built with componentize-js",
            "Node.js 20 and npm (the first build runs `npm install` for the pinned versions of `package.json`)",
            "a directory in `handlers/` with a `package.json` whose `build` script writes `target/NAME.wasm`",
        ),
        Lang::Ts => (
            "TypeScript, compiled by tsc and built with componentize-js",
            "Node.js 20 and npm (the first build runs `npm install` for the pinned versions of `package.json`)",
            "a directory in `handlers/` with a `package.json` whose `build` script writes `target/NAME.wasm`",
        ),
    };
    format!(
        "# {name}\n\n\
         A wasmgate project: one HTTP component in `handlers/{name}` ({language}),\n\
         served on `/` by `config/wasmgate.toml`. Needs {needs}.\n\n\
         ```sh\n\
         wasmgate dev                      # build, serve on 127.0.0.1:8080, rebuild and swap on every edit\n\
         curl http://127.0.0.1:8080/       # ask it\n\
         wasmgate build && wasmgate serve  # build once, then serve\n\
         ```\n\n\
         Add a component: {add}, then a `[handler.NAME]` and a `[[route]]` in\n\
         `config/wasmgate.toml`.\n"
    )
}

/// The two npm templates.
#[derive(Clone, Copy)]
enum Npm {
    Js,
    Ts,
}

fn npm(name: &str, kind: Npm) -> Vec<File> {
    let component = |file: &str| format!("handlers/{name}/{file}");
    let mut files = vec![
        (
            "README.md".to_string(),
            readme(
                name,
                match kind {
                    Npm::Js => Lang::Js,
                    Npm::Ts => Lang::Ts,
                },
            ),
        ),
        (".gitignore".to_string(), IGNORED.to_string()),
        ("config/wasmgate.toml".to_string(), config(name)),
    ];
    let templates: &[(&str, &str)] = match kind {
        Npm::Js => &[
            (
                "package.json",
                include_str!("../../templates/js/package.json"),
            ),
            (
                "package-lock.json",
                include_str!("../../templates/js/package-lock.json"),
            ),
            (
                "componentize.mjs",
                include_str!("../../templates/componentize.mjs"),
            ),
            ("src/app.js", include_str!("../../templates/js/src/app.js")),
        ],
        Npm::Ts => &[
            (
                "package.json",
                include_str!("../../templates/ts/package.json"),
            ),
            (
                "package-lock.json",
                include_str!("../../templates/ts/package-lock.json"),
            ),
            (
                "componentize.mjs",
                include_str!("../../templates/componentize.mjs"),
            ),
            (
                "tsconfig.json",
                include_str!("../../templates/ts/tsconfig.json"),
            ),
            ("src/app.ts", include_str!("../../templates/ts/src/app.ts")),
        ],
    };
    files.extend(
        templates
            .iter()
            .map(|(file, text)| (component(file), filled(text, name))),
    );
    files
}
