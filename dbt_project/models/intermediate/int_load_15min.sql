{{ config(materialized='view') }}
-- The 96-point curves unpivoted: one row per meter and collected 15-minute interval (kW, average
-- power).
select * from ({{ curve_points(ref('stg_ami__load_curves')) }})
