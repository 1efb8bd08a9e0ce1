//! Conformance cases, one public async fn per behaviour, grouped by port.
//!
//! Every case is listed once in [`__all_cases!`](crate::__all_cases); case names
//! are unique across modules because they become test function names.

pub mod aggregate;
pub mod checkpoint;
pub mod concurrency;
pub mod contains;
pub mod feed;
pub mod idempotency;
pub mod index;
pub mod lease;
pub mod page;
pub mod query;
pub mod repository;
pub mod ttl;
pub mod tx;
pub mod unique;
pub mod update;
pub mod validation;

/// Lists every case. Adding a case means adding a line here.
#[doc(hidden)]
#[macro_export]
macro_rules! __all_cases {
    ($h:expr) => {
        $crate::__conformance_test!($h, repository::insert_then_get_returns_the_document);
        $crate::__conformance_test!($h, repository::get_missing_key_is_none);
        $crate::__conformance_test!($h, repository::update_of_missing_key_is_not_found);
        $crate::__conformance_test!($h, repository::not_found_error_names_collection_and_key);
        $crate::__conformance_test!($h, repository::every_field_type_round_trips);
        $crate::__conformance_test!($h, repository::extreme_integers_round_trip);
        $crate::__conformance_test!($h, repository::unicode_and_empty_strings_round_trip);
        $crate::__conformance_test!($h, repository::insert_many_stores_all_and_returns_count);
        $crate::__conformance_test!($h, repository::insert_many_empty_returns_zero);
        $crate::__conformance_test!($h, repository::delete_existing_returns_true_and_removes);
        $crate::__conformance_test!($h, repository::delete_missing_returns_false);
        $crate::__conformance_test!($h, repository::deleted_key_can_be_reinserted);
        $crate::__conformance_test!($h, repository::delete_many_returns_count_of_removed);
        $crate::__conformance_test!($h, repository::delete_many_without_match_returns_zero);
        $crate::__conformance_test!($h, repository::get_by_indexed_field_finds_document);
        $crate::__conformance_test!($h, repository::get_by_unindexed_field_finds_document);
        $crate::__conformance_test!($h, repository::get_by_field_without_match_is_none);
        $crate::__conformance_test!(
            $h,
            repository::get_by_field_with_many_matches_returns_first_by_key
        );
        $crate::__conformance_test!($h, repository::find_one_without_match_is_none);
        $crate::__conformance_test!($h, repository::exists_reports_whether_anything_matches);
        $crate::__conformance_test!($h, repository::count_counts_matches);
        $crate::__conformance_test!($h, repository::replace_swaps_whole_document);
        $crate::__conformance_test!($h, repository::replace_of_missing_key_is_not_found);
        $crate::__conformance_test!($h, repository::update_one_returns_the_updated_document);
        $crate::__conformance_test!($h, repository::collections_do_not_share_keys);
        $crate::__conformance_test!($h, repository::fresh_store_starts_empty);
        $crate::__conformance_test!($h, repository::health_reports_backend_name);
        $crate::__conformance_test!($h, repository::migrate_is_idempotent_and_keeps_data);
        $crate::__conformance_test!($h, query::eq_matches_equal_values);
        $crate::__conformance_test!($h, query::ne_matches_different_values);
        $crate::__conformance_test!($h, query::gt_excludes_bound);
        $crate::__conformance_test!($h, query::gte_includes_bound);
        $crate::__conformance_test!($h, query::lt_excludes_bound);
        $crate::__conformance_test!($h, query::lte_includes_bound);
        $crate::__conformance_test!($h, query::range_on_float_field);
        $crate::__conformance_test!($h, query::in_matches_any_listed_value);
        $crate::__conformance_test!($h, query::in_empty_list_matches_nothing);
        $crate::__conformance_test!($h, query::nin_matches_unlisted_values);
        $crate::__conformance_test!($h, query::nin_empty_list_matches_everything);
        $crate::__conformance_test!($h, query::eq_on_bool);
        $crate::__conformance_test!($h, query::int_and_float_operands_compare_by_value);
        $crate::__conformance_test!($h, query::fractional_operand_matches_no_integer);
        $crate::__conformance_test!($h, query::eq_null_matches_absent_field);
        $crate::__conformance_test!($h, query::ne_matches_absent_field);
        $crate::__conformance_test!($h, query::ne_null_matches_present_field);
        $crate::__conformance_test!($h, query::nin_matches_absent_field);
        $crate::__conformance_test!($h, query::in_with_null_matches_absent_field);
        $crate::__conformance_test!($h, query::range_never_matches_absent_field);
        $crate::__conformance_test!($h, query::exists_matches_present_field);
        $crate::__conformance_test!($h, query::missing_matches_absent_field);
        $crate::__conformance_test!($h, query::json_null_is_treated_as_absent);
        $crate::__conformance_test!($h, query::empty_and_matches_everything);
        $crate::__conformance_test!($h, query::empty_or_matches_nothing);
        $crate::__conformance_test!($h, query::and_requires_every_subfilter);
        $crate::__conformance_test!($h, query::or_accepts_any_subfilter);
        $crate::__conformance_test!($h, query::not_inverts_subfilter);
        $crate::__conformance_test!($h, query::not_eq_includes_absent_field);
        $crate::__conformance_test!($h, query::not_range_includes_absent_field);
        $crate::__conformance_test!($h, query::nested_combinators_evaluate_correctly);
        $crate::__conformance_test!($h, query::filter_on_nested_field);
        $crate::__conformance_test!($h, query::filter_on_json_sub_path);
        $crate::__conformance_test!($h, query::eq_on_json_object_compares_structurally);
        $crate::__conformance_test!($h, query::eq_on_list_compares_whole_list);
        $crate::__conformance_test!($h, query::filter_on_map_entry);
        $crate::__conformance_test!($h, query::strings_compare_by_code_point);
        $crate::__conformance_test!($h, query::timestamp_range_filters_in_time_order);
        $crate::__conformance_test!($h, query::find_one_returns_first_match);
        $crate::__conformance_test!($h, query::filter_on_unindexed_field_works_or_is_unsupported);
        $crate::__conformance_test!($h, page::page_total_counts_all_matches);
        $crate::__conformance_test!($h, page::skip_and_limit_select_a_window);
        $crate::__conformance_test!($h, page::limit_zero_returns_all);
        $crate::__conformance_test!($h, page::limit_zero_with_skip_returns_the_rest);
        $crate::__conformance_test!($h, page::offset_past_end_returns_empty_page_with_total);
        $crate::__conformance_test!($h, page::last_page_is_partial);
        $crate::__conformance_test!($h, page::page_of_no_matches_has_zero_total);
        $crate::__conformance_test!($h, page::paging_visits_every_match_once);
        $crate::__conformance_test!($h, page::no_sort_orders_by_key);
        $crate::__conformance_test!($h, page::sort_ties_break_by_key);
        $crate::__conformance_test!($h, page::desc_sort_breaks_ties_by_key_ascending);
        $crate::__conformance_test!($h, page::pages_over_ties_are_stable);
        $crate::__conformance_test!($h, page::multi_field_sort);
        $crate::__conformance_test!($h, page::sort_on_nested_field);
        $crate::__conformance_test!($h, page::asc_sort_puts_absent_first);
        $crate::__conformance_test!($h, page::desc_sort_puts_absent_last);
        $crate::__conformance_test!($h, page::string_sort_is_by_code_point);
        $crate::__conformance_test!($h, page::numeric_sort_is_by_value);
        $crate::__conformance_test!($h, page::default_sort_applies_without_explicit_sort);
        $crate::__conformance_test!($h, page::explicit_sort_falls_back_to_default_sort_then_key);
        $crate::__conformance_test!($h, page::find_page_uses_default_sort);
        $crate::__conformance_test!($h, page::sort_on_unindexed_field_works_or_is_unsupported);
        $crate::__conformance_test!($h, update::set_replaces_value);
        $crate::__conformance_test!($h, update::set_creates_absent_optional_field);
        $crate::__conformance_test!($h, update::set_nested_field_keeps_siblings);
        $crate::__conformance_test!($h, update::set_json_sub_path_creates_parents);
        $crate::__conformance_test!($h, update::set_map_entry_adds_it);
        $crate::__conformance_test!($h, update::set_timestamp_round_trips);
        $crate::__conformance_test!($h, update::unset_removes_optional_field);
        $crate::__conformance_test!($h, update::unset_json_sub_path_keeps_siblings);
        $crate::__conformance_test!($h, update::inc_adds_to_integer);
        $crate::__conformance_test!($h, update::inc_adds_to_float);
        $crate::__conformance_test!($h, update::inc_of_absent_field_starts_from_zero);
        $crate::__conformance_test!($h, update::push_appends_to_list);
        $crate::__conformance_test!($h, update::push_onto_absent_field_creates_list);
        $crate::__conformance_test!($h, update::push_onto_set_ignores_present_value);
        $crate::__conformance_test!(
            $h,
            update::push_of_present_set_element_is_not_a_modification
        );
        $crate::__conformance_test!($h, update::several_operators_apply_together);
        $crate::__conformance_test!($h, update::set_on_insert_ignored_on_update);
        $crate::__conformance_test!($h, update::upsert_inserts_missing_document);
        $crate::__conformance_test!($h, update::upsert_updates_existing_document);
        $crate::__conformance_test!($h, update::upsert_insert_applies_inc_from_zero);
        $crate::__conformance_test!(
            $h,
            update::upsert_insert_missing_required_field_is_validation
        );
        $crate::__conformance_test!($h, update::update_many_counts_matched_and_modified);
        $crate::__conformance_test!($h, update::update_with_equal_values_modifies_nothing);
        $crate::__conformance_test!($h, update::set_int_onto_equal_float_is_not_a_modification);
        $crate::__conformance_test!($h, update::unset_of_absent_field_is_not_a_modification);
        $crate::__conformance_test!($h, update::removing_a_required_field_counts_every_match);
        $crate::__conformance_test!($h, update::update_many_leaves_non_matches_alone);
        $crate::__conformance_test!($h, update::update_many_without_match_reports_zero);
        $crate::__conformance_test!($h, update::key_is_immutable);
        $crate::__conformance_test!($h, update::update_unknown_path_is_validation_naming_it);
        $crate::__conformance_test!($h, update::set_wrong_type_is_validation_naming_field);
        $crate::__conformance_test!($h, update::set_non_canonical_timestamp_is_validation);
        $crate::__conformance_test!($h, update::set_object_missing_required_child_is_validation);
        $crate::__conformance_test!($h, update::inc_on_non_number_is_validation_naming_field);
        $crate::__conformance_test!($h, update::push_wrong_type_is_validation_naming_field);
        $crate::__conformance_test!($h, update::unset_required_field_is_validation);
        $crate::__conformance_test!($h, update::set_null_on_optional_field_clears_it);
        $crate::__conformance_test!($h, update::empty_update_is_validation);
        $crate::__conformance_test!($h, update::overlapping_update_paths_are_validation);
        $crate::__conformance_test!($h, update::invalid_update_many_changes_nothing);
        $crate::__conformance_test!($h, aggregate::count_by_groups_and_orders_by_value);
        $crate::__conformance_test!($h, aggregate::count_by_respects_filter);
        $crate::__conformance_test!($h, aggregate::count_by_groups_absent_values_as_null);
        $crate::__conformance_test!($h, aggregate::count_by_of_no_matches_is_empty);
        $crate::__conformance_test!($h, aggregate::count_by_on_bool);
        $crate::__conformance_test!($h, aggregate::count_by_on_list_is_validation);
        $crate::__conformance_test!($h, aggregate::min_and_max_of_integers);
        $crate::__conformance_test!($h, aggregate::sum_of_integers_is_an_integer);
        $crate::__conformance_test!($h, aggregate::sum_of_floats);
        $crate::__conformance_test!($h, aggregate::sum_skips_absent_values);
        $crate::__conformance_test!($h, aggregate::min_and_max_skip_absent_values);
        $crate::__conformance_test!($h, aggregate::sum_of_no_matches_is_zero);
        $crate::__conformance_test!($h, aggregate::min_and_max_of_no_matches_are_null);
        $crate::__conformance_test!($h, aggregate::min_and_max_of_strings);
        $crate::__conformance_test!($h, aggregate::min_and_max_of_timestamps);
        $crate::__conformance_test!($h, aggregate::sum_of_non_number_is_validation);
        $crate::__conformance_test!($h, aggregate::min_of_unsortable_field_is_validation);
        $crate::__conformance_test!($h, contains::contains_ignores_case);
        $crate::__conformance_test!($h, contains::contains_matches_substrings);
        $crate::__conformance_test!($h, contains::contains_percent_is_literal);
        $crate::__conformance_test!($h, contains::contains_underscore_is_literal);
        $crate::__conformance_test!($h, contains::contains_dot_star_is_literal);
        $crate::__conformance_test!($h, contains::contains_backslash_is_literal);
        $crate::__conformance_test!($h, contains::contains_bracket_is_literal);
        $crate::__conformance_test!($h, contains::contains_paren_is_literal);
        $crate::__conformance_test!($h, contains::contains_empty_needle_matches_present_fields);
        $crate::__conformance_test!($h, contains::contains_never_matches_absent_field);
        $crate::__conformance_test!($h, contains::contains_on_nested_and_json_paths);
        $crate::__conformance_test!($h, contains::contains_on_non_string_field_is_validation);
        $crate::__conformance_test!($h, unique::duplicate_key_is_conflict);
        $crate::__conformance_test!($h, unique::conflict_error_names_collection_and_key);
        $crate::__conformance_test!($h, unique::duplicate_unique_field_is_conflict);
        $crate::__conformance_test!($h, unique::absent_unique_fields_do_not_collide);
        $crate::__conformance_test!($h, unique::update_to_duplicate_unique_field_is_conflict);
        $crate::__conformance_test!($h, unique::replace_with_duplicate_unique_field_is_conflict);
        $crate::__conformance_test!($h, unique::update_many_onto_one_unique_value_writes_nothing);
        $crate::__conformance_test!($h, unique::rewriting_own_unique_value_is_not_conflict);
        $crate::__conformance_test!($h, unique::unique_value_is_free_after_delete);
        $crate::__conformance_test!($h, unique::unique_value_is_free_after_change);
        $crate::__conformance_test!($h, unique::insert_many_with_existing_key_writes_nothing);
        $crate::__conformance_test!($h, unique::insert_many_with_repeated_key_writes_nothing);
        $crate::__conformance_test!(
            $h,
            unique::insert_many_with_repeated_unique_field_writes_nothing
        );
        $crate::__conformance_test!($h, unique::insert_many_with_invalid_document_writes_nothing);
        $crate::__conformance_test!($h, feed::feed_delivers_every_kind_in_order);
        $crate::__conformance_test!($h, feed::feed_events_carry_key_and_document_after_change);
        $crate::__conformance_test!($h, feed::feed_delete_event_has_no_document);
        $crate::__conformance_test!($h, feed::feed_delete_many_yields_one_event_per_document);
        $crate::__conformance_test!($h, feed::feed_preserves_commit_order);
        $crate::__conformance_test!($h, feed::feed_insert_many_yields_one_event_per_document);
        $crate::__conformance_test!($h, feed::feed_from_now_skips_earlier_changes);
        $crate::__conformance_test!($h, feed::feed_from_beginning_replays_history);
        $crate::__conformance_test!($h, feed::feed_resumes_right_after_token);
        $crate::__conformance_test!($h, feed::feed_resume_delivers_no_duplicates);
        $crate::__conformance_test!($h, feed::feed_resume_delivers_changes_made_while_away);
        $crate::__conformance_test!($h, feed::feed_filter_delivers_only_matches);
        $crate::__conformance_test!($h, feed::feed_filtered_watch_skips_deletes);
        $crate::__conformance_test!($h, feed::feed_is_per_collection);
        $crate::__conformance_test!($h, feed::feed_delivers_to_every_watcher);
        $crate::__conformance_test!($h, feed::feed_event_times_are_monotonic);
        $crate::__conformance_test!($h, feed::feed_expired_token_is_resume_token_expired);
        $crate::__conformance_test!($h, feed::feed_token_text_round_trips);
        $crate::__conformance_test!($h, feed::feed_malformed_token_text_is_validation);
        $crate::__conformance_test!($h, feed::feed_omits_rolled_back_writes);
        $crate::__conformance_test!($h, feed::feed_collection_without_feed_cannot_be_watched);
        $crate::__conformance_test!($h, lease::lease_acquire_free_name_grants_it);
        $crate::__conformance_test!($h, lease::lease_expiry_is_ttl_after_grant);
        $crate::__conformance_test!($h, lease::lease_is_exclusive_while_live);
        $crate::__conformance_test!($h, lease::leases_on_different_names_are_independent);
        $crate::__conformance_test!($h, lease::lease_takeover_after_expiry_gets_higher_token);
        $crate::__conformance_test!($h, lease::lease_renew_extends_life);
        $crate::__conformance_test!($h, lease::lease_renew_keeps_token);
        $crate::__conformance_test!($h, lease::lease_renew_by_stale_holder_is_lock_lost);
        $crate::__conformance_test!($h, lease::lease_renew_after_expiry_is_lock_lost);
        $crate::__conformance_test!($h, lease::lease_release_by_stale_holder_is_lock_lost);
        $crate::__conformance_test!($h, lease::lease_release_frees_it);
        $crate::__conformance_test!($h, lease::lease_reacquire_after_release_gets_higher_token);
        $crate::__conformance_test!($h, lease::lease_double_release_is_lock_lost);
        $crate::__conformance_test!($h, lease::lease_tokens_strictly_increase);
        $crate::__conformance_test!($h, lease::lease_check_reports_liveness);
        $crate::__conformance_test!($h, lease::lease_current_ignores_expired);
        $crate::__conformance_test!($h, lease::lease_list_shows_only_live);
        $crate::__conformance_test!($h, lease::lease_force_release_drops_holder);
        $crate::__conformance_test!($h, lease::lease_force_release_of_free_name_is_false);
        $crate::__conformance_test!($h, lease::lease_concurrent_acquisition_has_one_winner);
        $crate::__conformance_test!($h, lease::lease_malformed_name_is_validation);
        $crate::__conformance_test!($h, idempotency::idem_first_begin_is_started);
        $crate::__conformance_test!($h, idempotency::idem_begin_while_running_is_in_progress);
        $crate::__conformance_test!($h, idempotency::idem_begin_after_complete_returns_response);
        $crate::__conformance_test!(
            $h,
            idempotency::idem_completed_key_with_other_fingerprint_is_mismatch
        );
        $crate::__conformance_test!(
            $h,
            idempotency::idem_running_key_with_other_fingerprint_is_mismatch
        );
        $crate::__conformance_test!($h, idempotency::idem_keys_are_independent);
        $crate::__conformance_test!($h, idempotency::idem_complete_of_unknown_key_is_not_found);
        $crate::__conformance_test!($h, idempotency::idem_abandon_then_begin_is_started);
        $crate::__conformance_test!($h, idempotency::idem_abandon_of_unknown_key_is_false);
        $crate::__conformance_test!($h, idempotency::idem_running_key_expires);
        $crate::__conformance_test!($h, idempotency::idem_completed_key_expires);
        $crate::__conformance_test!($h, idempotency::idem_complete_after_expiry_is_not_found);
        $crate::__conformance_test!($h, idempotency::idem_purge_removes_only_expired);
        $crate::__conformance_test!($h, idempotency::idem_concurrent_begin_starts_once);
        $crate::__conformance_test!($h, checkpoint::checkpoint_missing_is_none);
        $crate::__conformance_test!($h, checkpoint::checkpoint_save_then_load);
        $crate::__conformance_test!($h, checkpoint::checkpoint_save_overwrites);
        $crate::__conformance_test!($h, checkpoint::checkpoints_are_per_processor);
        $crate::__conformance_test!($h, checkpoint::checkpoint_delete_removes_it);
        $crate::__conformance_test!($h, checkpoint::checkpoint_of_feed_token_resumes_feed);
        $crate::__conformance_test!($h, tx::tx_commit_makes_all_writes_visible);
        $crate::__conformance_test!($h, tx::tx_error_rolls_back_everything);
        $crate::__conformance_test!($h, tx::tx_conflict_inside_rolls_back_earlier_writes);
        $crate::__conformance_test!($h, tx::tx_rollback_spans_collections);
        $crate::__conformance_test!($h, tx::tx_reads_its_own_writes);
        $crate::__conformance_test!($h, tx::tx_run_transaction_returns_value);
        $crate::__conformance_test!($h, tx::tx_uncommitted_writes_are_invisible_to_other_readers);
        $crate::__conformance_test!($h, tx::tx_get_for_update_reads_and_locks_row);
        $crate::__conformance_test!($h, tx::tx_get_for_update_of_missing_key_is_none);
        $crate::__conformance_test!($h, tx::tx_concurrent_read_modify_write_loses_nothing);
        $crate::__conformance_test!($h, tx::tx_check_fence_with_live_lease_commits);
        $crate::__conformance_test!($h, tx::tx_check_fence_with_stale_lease_fails);
        $crate::__conformance_test!($h, tx::tx_validation_error_inside_rolls_back);
        $crate::__conformance_test!($h, concurrency::concurrent_incs_lose_nothing);
        $crate::__conformance_test!($h, concurrency::concurrent_update_many_incs_lose_nothing);
        $crate::__conformance_test!(
            $h,
            concurrency::concurrent_inserts_of_one_key_have_one_winner
        );
        $crate::__conformance_test!(
            $h,
            concurrency::concurrent_upserts_of_one_key_create_it_once
        );
        $crate::__conformance_test!($h, concurrency::concurrent_claims_never_hand_a_doc_twice);
        $crate::__conformance_test!($h, concurrency::claim_takes_in_query_order_up_to_limit);
        $crate::__conformance_test!($h, concurrency::concurrent_readers_see_whole_documents);
        $crate::__conformance_test!($h, ttl::ticket_expires_after_ttl);
        $crate::__conformance_test!($h, ttl::expired_ticket_is_excluded_from_queries);
        $crate::__conformance_test!($h, ttl::touching_a_ticket_extends_its_life);
        $crate::__conformance_test!($h, ttl::expired_ticket_update_is_not_found);
        $crate::__conformance_test!($h, validation::oversized_key_is_validation);
        $crate::__conformance_test!($h, validation::key_at_limit_is_accepted);
        $crate::__conformance_test!($h, validation::empty_key_is_validation);
        $crate::__conformance_test!($h, validation::control_characters_in_key_are_validation);
        $crate::__conformance_test!(
            $h,
            validation::document_missing_required_field_is_validation
        );
        $crate::__conformance_test!($h, validation::document_with_wrong_field_type_is_validation);
        $crate::__conformance_test!($h, validation::malformed_document_is_validation);
        $crate::__conformance_test!($h, validation::invalid_replace_is_validation);
        $crate::__conformance_test!($h, validation::filter_unknown_path_is_validation_naming_it);
        $crate::__conformance_test!($h, validation::filter_wrong_operand_type_is_validation);
        $crate::__conformance_test!($h, validation::range_on_non_scalar_field_is_validation);
        $crate::__conformance_test!($h, validation::sort_on_unsortable_field_is_validation);
        $crate::__conformance_test!($h, validation::sort_on_unknown_field_is_validation);
        $crate::__conformance_test!($h, validation::hostile_filter_paths_are_validation);
        $crate::__conformance_test!($h, validation::hostile_paths_elsewhere_are_validation);
        $crate::__conformance_test!($h, validation::hostile_values_are_inert_data);
        $crate::__conformance_test!($h, validation::hostile_key_is_an_ordinary_key);
        $crate::__conformance_test!(
            $h,
            validation::operator_shaped_operand_is_compared_literally
        );
        $crate::__conformance_test!($h, index::indexed_lookup_follows_updates);
        $crate::__conformance_test!($h, index::indexed_lookup_follows_replace_and_delete);
        $crate::__conformance_test!($h, index::update_many_moving_indexed_value_moves_all);
        $crate::__conformance_test!($h, index::indexed_eq_compares_numbers_by_value);
        $crate::__conformance_test!($h, index::indexed_eq_null_matches_absent);
        $crate::__conformance_test!($h, index::indexed_eq_with_other_predicates);
        $crate::__conformance_test!($h, index::rollback_restores_indexes_and_unique_values);
        $crate::__conformance_test!($h, index::expired_documents_leave_indexed_lookups);
    };
}
