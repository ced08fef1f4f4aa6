//! Greeter tutorial: a translator that needs nothing from the host (no
//! clocks, random, files, network or configuration). Words it knows for a
//! locale are replaced; anything else comes back unchanged.

mod bindings {
    wit_bindgen::generate!({
        path: "../../../examples/greeter/wit",
        world: "translator",
    });
}

struct Translator;

/// Per locale, the words it translates.
const WORDS: &[(&str, &[(&str, &str)])] = &[
    ("haw-US", &[("Hello", "Aloha")]),
    ("es-ES", &[("Hello", "Hola")]),
    ("de-DE", &[("Hello", "Hallo"), ("World", "Welt")]),
    ("fr-FR", &[("Hello", "Bonjour"), ("World", "le monde")]),
];

impl bindings::exports::wasmgate::greeter::translate::Guest for Translator {
    fn translate(text: String, locale: String) -> String {
        let Some((_, words)) = WORDS.iter().find(|(known, _)| *known == locale) else {
            return text;
        };
        words
            .iter()
            .fold(text, |text, (from, to)| text.replace(from, to))
    }
}

bindings::export!(Translator with_types_in bindings);
