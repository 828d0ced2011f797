-- miltertest (OpenDKIM's milter test driver) against a running handoff.
-- Run: miltertest -D port=8891 -D marker="gone@corp.example; d=…; mac=…" -s tests/miltertest/handoff.lua
-- (marker: the loop marker the daemon writes for gone@ today, with its secret; see
-- tests/daemon.rs Daemon::loop_marker).
-- The policy is tests/milter_wire.rs's POLICY: gone@ departed (forward to cs@, no copy),
-- dis@ disabled, sales@ an alias of alice@ and bob@.

if port == nil then
	error "define the milter port: miltertest -D port=PORT -s handoff.lua"
end
if marker == nil then
	error "define the expected loop marker: miltertest -D marker=VALUE"
end

conn = mt.connect("inet:" .. port .. "@127.0.0.1", 10, 0.2)
if conn == nil then
	error "mt.connect() failed"
end

if mt.conninfo(conn, "client.example", "192.0.2.1") ~= nil then
	error "mt.conninfo() failed"
end

if mt.mailfrom(conn, "<sender@partner.example>") ~= nil then
	error "mt.mailfrom() failed"
end
if mt.getreply(conn) ~= SMFIR_CONTINUE then
	error "MAIL: expected CONTINUE"
end

-- A disabled recipient is refused on its own, with the policy's reply.
if mt.rcptto(conn, "<dis@corp.example>") ~= nil then
	error "mt.rcptto(dis) failed"
end
if mt.getreply(conn) ~= SMFIR_REPLYCODE then
	error "RCPT dis@: expected a REPLYCODE"
end

if mt.rcptto(conn, "<gone@corp.example>") ~= nil then
	error "mt.rcptto(gone) failed"
end
if mt.getreply(conn) ~= SMFIR_CONTINUE then
	error "RCPT gone@: expected CONTINUE"
end

if mt.header(conn, "Subject", "miltertest") ~= nil then
	error "mt.header() failed"
end
if mt.bodystring(conn, "hello from miltertest\r\n") ~= nil then
	error "mt.bodystring() failed"
end
if mt.eom(conn) ~= nil then
	error "mt.eom() failed"
end
if mt.getreply(conn) ~= SMFIR_CONTINUE then
	error "EOM: expected CONTINUE"
end

-- The departed recipient is replaced by its successor, and the loop marker is added.
if not mt.eom_check(conn, MT_RCPTDELETE, "<gone@corp.example>") then
	error "EOM: gone@ was not deleted"
end
if not mt.eom_check(conn, MT_RCPTADD, "<cs@corp.example>") then
	error "EOM: cs@ was not added"
end
-- handoff negotiates HDR_LEADSPC, so the value carries its own leading space. `marker` (-D)
-- is the value signed with the daemon's loop-marker secret.
if not mt.eom_check(conn, MT_HDRADD, "X-Handoff-Forwarded", " " .. marker) then
	error "EOM: loop marker missing"
end

mt.disconnect(conn)
mt.echo("handoff miltertest: all checks passed")
