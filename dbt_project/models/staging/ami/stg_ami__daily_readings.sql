-- One reading per meter and day (the latest extract wins): macros/daily_readings.sql.
{{ daily_readings() }}
