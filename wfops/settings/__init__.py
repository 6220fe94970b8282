"""Settings: the one dotenv file -> typed, validated values (the KEYS table, each key's check, loading)."""
