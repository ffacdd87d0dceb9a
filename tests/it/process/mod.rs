//! The daemon as a process: start-up and exit codes, signals and the drain,
//! crashes at any moment and at precise points, the supervisor's restarts,
//! two daemons on one folder.

mod crashes;
mod signals;
mod startup;
mod supervisor;
