"""The services outside: Backboard, Clerk's Backend API, Clerk session tokens. Import
nothing above them."""
