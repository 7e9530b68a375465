"""The rules: trips, chat turns, users and their Clerk sync, cursors. Import the store and
the gateways, never the HTTP edge."""
