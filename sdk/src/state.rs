//! Where a plugin's value lives between calls: a thread-local `RefCell<Option<T>>` that the
//! export macro declares in the plugin's crate (a component instance is single-threaded, and
//! the host never re-enters it). `None` until `init` succeeds.

use std::cell::RefCell;
use std::thread::LocalKey;

/// The cell an export macro declares for the plugin's value.
pub type State<T> = RefCell<Option<T>>;

/// The thread-local key of a plugin's [`State`].
pub type StateKey<T> = &'static LocalKey<State<T>>;

/// Runs `make` (the plugin's `init`) and stores its value; a failure leaves no value, so later
/// hooks answer their "not initialised" default instead of using a half-made plugin.
pub(crate) fn init<T>(
    key: StateKey<T>,
    make: impl FnOnce() -> Result<T, String>,
) -> Result<(), String> {
    let made = make();
    key.with(|cell| {
        let mut slot = cell
            .try_borrow_mut()
            .map_err(|_| "mlahost-sdk: init re-entered while a hook was running".to_string())?;
        match made {
            Ok(plugin) => {
                *slot = Some(plugin);
                Ok(())
            }
            Err(e) => {
                *slot = None;
                Err(e)
            }
        }
    })
}

/// Runs `f` on the plugin's value; `None` when `init` has not succeeded (or, which the host never
/// does, when a hook is re-entered).
pub(crate) fn with<T, R>(key: StateKey<T>, f: impl FnOnce(&mut T) -> R) -> Option<R> {
    key.with(|cell| {
        let mut slot = cell.try_borrow_mut().ok()?;
        slot.as_mut().map(f)
    })
}

/// The message of a hook called before a successful `init`.
pub(crate) const NOT_INITIALISED: &str = "mlahost plugin: hook called before a successful init";
