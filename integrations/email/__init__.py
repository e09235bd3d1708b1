"""Email: sending (sender.py: SMTP or an .eml folder), composing from templates (compose.py), and
replies by email coming in (inbound.py parses and strips them, mail_in.py is the SMTP/LMTP server)."""
