"""The speaker's link to the central service: find an access point, log in, stay online."""
