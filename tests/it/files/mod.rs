//! Files and folders: which files are read and when (names, temp names,
//! non-regular files, the watcher, many files), what a file's identity is
//! (same name, same content, changed or deleted while read), and folders
//! or files the daemon cannot write, move or read.

mod faults;
mod identity;
mod watcher;
