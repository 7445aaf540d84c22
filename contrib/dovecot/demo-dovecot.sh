#!/usr/bin/env bash
# A throwaway Dovecot for config/demo-imap.toml: IMAP on 127.0.0.1:10143 without TLS
# (loopback only), every mailbox with the password in $COMMS_ARCHIVER_IMAP_PASSWORD, mail
# under ./var/dovecot/mail. Needs the Debian package dovecot-imapd and root (Dovecot runs
# its login processes as dovenull and mail as dovecot). Stop it with: kill "$(cat var/dovecot/run/master.pid)"
set -euo pipefail
: "${COMMS_ARCHIVER_IMAP_PASSWORD:?set COMMS_ARCHIVER_IMAP_PASSWORD first}"
dir="$PWD/var/dovecot"
mkdir -p "$dir/run" "$dir/mail"
chown dovecot:dovecot "$dir/mail"
chmod 755 "$PWD/var" "$dir"
cat > "$dir/dovecot.conf" <<CONF
base_dir = $dir/run
state_dir = $dir/run
log_path = $dir/dovecot.log
ssl = no
disable_plaintext_auth = no
protocols = imap
listen = 127.0.0.1
default_login_user = dovenull
default_internal_user = dovecot
mail_location = maildir:$dir/mail/%u
mail_uid = dovecot
mail_gid = dovecot
first_valid_uid = 1
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = 10143
  }
  inet_listener imaps {
    port = 0
  }
}
service pop3-login {
  inet_listener pop3 {
    port = 0
  }
}
passdb {
  driver = static
  args = password=$COMMS_ARCHIVER_IMAP_PASSWORD
}
userdb {
  driver = static
  args = uid=dovecot gid=dovecot home=$dir/mail/%u
}
CONF
dovecot -c "$dir/dovecot.conf"
# Returns once Dovecot takes connections.
for _ in $(seq 50); do
  (exec 3<>/dev/tcp/127.0.0.1/10143) 2>/dev/null && break
  sleep 0.2
done
echo "Dovecot listens on 127.0.0.1:10143; log: $dir/dovecot.log"
