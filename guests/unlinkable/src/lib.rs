//! Test guest that imports an interface no Toka host provides
//! (`toka:test-unlinkable/missing`): loading it must fail with an error that
//! names the missing import, and must not stop the other agents.

wit_bindgen::generate!({
    inline: r#"
        package toka:test-unlinkable;

        /// Deliberately provided by no host.
        interface missing {
            /// Never callable: the component cannot be linked.
            frob: func() -> u32;
        }

        world unlinkable {
            include toka:runtime/agent@0.1.4;
            import missing;
        }
    "#,
    path: "../../wit",
    world: "unlinkable",
    generate_all,
});

use exports::toka::runtime::handler::Guest;
use toka::runtime::types::Event;

struct Unlinkable;

impl Guest for Unlinkable {
    fn init(_config: Vec<(String, String)>) -> Result<(), String> {
        Ok(())
    }

    fn handle(_event: Event) -> Result<(), String> {
        // Using the import keeps it in the component.
        let _ = toka::test_unlinkable::missing::frob();
        Ok(())
    }
}

export!(Unlinkable);
