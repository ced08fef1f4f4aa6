//! `wasmgate new NAME`: a project that works end to end. It has the layout
//! the other commands default to (`config/wasmgate.toml`, a guest
//! workspace in `handlers/`), so `cd NAME && wasmgate dev` serves it.
//!
//! Invariant: nothing is overwritten; a name that is not a valid handler
//! and crate name, or a directory that exists, is refused before anything
//! is written.

use std::path::Path;

/// The Rust toolchain a new project pins (the one this gateway is built
/// and tested with); rustup installs it, with the guest target, on the
/// project's first build.
const RUST_TOOLCHAIN: &str = "1.95.0";
/// The WASI 0.2 bindings a new Rust component pins.
const WASIP2: &str = "2.0.1";

/// Writes a new project called `name` into the directory `name`, for `lang`
/// (only `rust` so far); returns what to run next.
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
    if lang != "rust" {
        return Err(format!(
            "--lang {lang}: only rust templates exist so far (ts, js and python are planned)"
        ));
    }
    let root = Path::new(name);
    if root.exists() {
        return Err(format!("{name} already exists; nothing was written"));
    }
    let files = [
        ("README.md", readme(name)),
        (
            ".gitignore",
            "/handlers/target/\n/handlers/wasm/\n".to_string(),
        ),
        (
            "rust-toolchain.toml",
            format!(
                "# The toolchain this project builds with; rustup installs it (and the\n\
                 # component target) on the first build.\n\
                 [toolchain]\nchannel = \"{RUST_TOOLCHAIN}\"\ntargets = [\"wasm32-wasip2\"]\n"
            ),
        ),
        ("config/wasmgate.toml", config(name)),
        (
            "handlers/Cargo.toml",
            format!(
                "# The project's components, each built for wasm32-wasip2 by `wasmgate build`.\n\
                 [workspace]\nresolver = \"3\"\nmembers = [\"{name}\"]\n\n\
                 [profile.release]\nopt-level = \"s\"\nlto = true\ncodegen-units = 1\nstrip = true\n"
            ),
        ),
        (
            &format!("handlers/{name}/Cargo.toml"),
            format!(
                "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
                 [lib]\ncrate-type = [\"cdylib\"]\n\n\
                 [dependencies]\nwasip2 = \"={WASIP2}\"\n"
            ),
        ),
        (&format!("handlers/{name}/src/lib.rs"), component(name)),
    ];
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
        "created {name}/ (a Rust component, handlers/{name})\n\
         next: cd {name} && wasmgate dev, then curl http://127.0.0.1:8080/"
    ))
}

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

fn component(name: &str) -> String {
    format!(
        r#"//! The {name} component: answers every request with a greeting.

use wasip2::http::types::{{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
}};

struct Component;

impl wasip2::exports::http::incoming_handler::Guest for Component {{
    fn handle(request: IncomingRequest, out: ResponseOutparam) {{
        let path = request.path_with_query().unwrap_or_default();
        let text = format!("Hello from {name}! You asked for {{path}}\n");
        let headers = Fields::from_list(&[(
            "content-type".to_string(),
            b"text/plain; charset=utf-8".to_vec(),
        )])
        .expect("a valid header");
        let response = OutgoingResponse::new(headers);
        let body = response.body().expect("the body is taken once");
        ResponseOutparam::set(out, Ok(response));
        let stream = body.write().expect("the stream is taken once");
        let _ = stream.blocking_write_and_flush(text.as_bytes());
        drop(stream);
        let _ = OutgoingBody::finish(body, None);
    }}
}}

wasip2::http::proxy::export!(Component);
"#
    )
}

fn readme(name: &str) -> String {
    format!(
        "# {name}\n\n\
         A [wasmgate](https://github.com/) project: one HTTP component in\n\
         `handlers/{name}` (Rust, built for `wasm32-wasip2`), served on `/` by\n\
         `config/wasmgate.toml`.\n\n\
         ```sh\n\
         wasmgate dev                      # build, serve on 127.0.0.1:8080, rebuild and swap on every edit\n\
         curl http://127.0.0.1:8080/       # ask it\n\
         wasmgate build && wasmgate serve  # build once, then serve\n\
         ```\n\n\
         Add a component: a crate in `handlers/` (list it in `handlers/Cargo.toml`),\n\
         a `[handler.NAME]` and a `[[route]]` in `config/wasmgate.toml`.\n"
    )
}
