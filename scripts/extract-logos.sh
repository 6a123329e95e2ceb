#!/bin/sh
# Extracts the portal's brand logos from the simple-icons npm package (CC0)
# into portal/static/logos/, which is committed: building the portal needs
# no npm. Services without a logo there (OpenAI, Slack, Microsoft, Salesforce,
# Twilio, SendGrid, SMTP) get a
# monogram drawn by the portal.
set -eu
cd "$(dirname "$0")/.."

SLUGS="google gmail googledrive googlecalendar googleads googlecloud github discord stripe linear anthropic notion atlassian hubspot dropbox box zoom asana gitlab figma airtable mailgun spotify"

command -v npm >/dev/null || { echo "extract-logos: npm is needed (apt-get install npm)" >&2; exit 1; }
npm ci --prefix scripts/logos --no-audit --no-fund --loglevel=error
rm -f portal/static/logos/*.svg
node scripts/logos/extract.mjs portal/static/logos $SLUGS
