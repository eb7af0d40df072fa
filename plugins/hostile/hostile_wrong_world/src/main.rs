//! A WASI command (`wasi:cli/run`): a valid component for the wrong world. The host must refuse
//! it at start-up, saying it exports none of the mlahost worlds.

fn main() {
    println!("hostile_wrong_world: I am a command, not an mlahost plugin");
}
