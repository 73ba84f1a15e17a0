-- One row per outage (Asia/Shanghai times as delivered); END_TIME empty while it lasts.
with source as (
    {{ latest_per_key('om__outage') }}
),

final as (
    select
        OUTAGE_ID as outage_id,
        TG_ID as tg_id,
        START_TIME as started_at,
        END_TIME as ended_at,
        END_TIME is null as is_ongoing,
        OUTAGE_TYPE as outage_type,
        {{ code_label('om__outage', 'outage_type', 'OUTAGE_TYPE') }} as outage_type_en,
        CAUSE as cause,
        coalesce(END_TIME < START_TIME, false) as has_time_disorder,
        _source_file as source_file,
        _loaded_at as loaded_at
    from source
)

select * from final
