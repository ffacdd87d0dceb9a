#!/bin/sh
# The ingestd image's entrypoint: runs `ingestd "$@"` as the owner of /data.
#
# /data is usually a bind mount of the project's ./data, owned by whoever
# cloned the repository. Running as that uid:gid means no chown before the
# first `docker compose up`, and the files the daemon and the generator write
# (processed/, bad_records/, incoming/) stay the host user's to read and
# delete. When /data belongs to root (a clone made as root, or a fresh named
# volume), the daemon runs as the image's user ingestd (uid 10001) instead:
# never as root. It is handed /data and its folders (not their files).
# Started as any user other than root (docker run --user, compose `user:`),
# this script only runs ingestd.
set -eu

if [ "$(id -u)" != 0 ]; then
    exec ingestd "$@"
fi

data=/data
mkdir -p "$data"
owner=$(stat -c %u:%g "$data")
case $owner in
    0:*) owner=$(id -u ingestd):$(id -g ingestd) ;;
esac
for dir in "$data" "${INGESTD_PATHS__INCOMING:-$data/incoming}" \
    "${INGESTD_PATHS__PROCESSED:-$data/processed}" "${INGESTD_PATHS__BAD_RECORDS:-$data/bad_records}"; do
    mkdir -p "$dir"
    if [ "$(stat -c %u:%g "$dir")" != "$owner" ]; then
        # A failure here (a read-only or root-squashed mount) leaves the
        # folder as it is; ingestd then says which folder it cannot write.
        chown "$owner" "$dir" || echo "entrypoint: cannot chown $dir to $owner" >&2
    fi
done
exec setpriv --reuid="${owner%:*}" --regid="${owner#*:}" --clear-groups -- ingestd "$@"
