#!/bin/sh
# The entrypoint of the images `tilt up` builds for live update (the
# Dockerfile's "live" target; production images do not have it):
#
#   supervise LIVE_DIR BINARY [ARG...]
#
# runs BINARY with the ARGs, or, once Tilt has synced a newer build of it
# into LIVE_DIR (an emptyDir: the root filesystem stays read-only), that
# build. SIGUSR1 (Tilt's live update runs `kill -USR1 1` after the sync)
# stops the running process with SIGTERM, waits for it to exit, and starts
# the newest build in its place, in the same container. (Not SIGHUP: a
# shell cannot trap a signal ignored when it started, and nohup and other
# launchers ignore SIGHUP.) SIGTERM and SIGINT
# are passed on, and supervise exits with the process's status; so does it
# when the process exits by itself, and the kubelet sees it as usual.
#
# The synced file is copied before it runs, so the next sync never writes
# over a running executable. POSIX sh: busybox's in the image, any in tests.
set -u
live=$1 binary=$2
shift 2
name=${binary##*/}
child= restart=0 stop=0
trap 'restart=1; [ -n "$child" ] && kill -TERM "$child" 2>/dev/null' USR1
trap 'stop=1; [ -n "$child" ] && kill -TERM "$child" 2>/dev/null' TERM INT
while :; do
	exe=$binary
	if [ -f "$live/$name" ]; then
		cp -f "$live/$name" "$live/.running-$name" && chmod 0755 "$live/.running-$name" && exe=$live/.running-$name
	fi
	"$exe" "$@" &
	child=$!
	# A signal that came before $child was set found nothing to stop.
	if [ "$restart" = 1 ] || [ "$stop" = 1 ]; then
		kill -TERM "$child" 2>/dev/null
	fi
	# wait returns early when a trapped signal arrives: wait again until
	# the process is gone.
	while :; do
		wait "$child"
		status=$?
		kill -0 "$child" 2>/dev/null || break
	done
	child=
	if [ "$stop" = 1 ] || [ "$restart" = 0 ]; then
		exit "$status"
	fi
	restart=0
	echo "supervise: restarting $name" >&2
done
