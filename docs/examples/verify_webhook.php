<?php
// Verifying a govbus webhook delivery (Standard Webhooks signatures) in PHP.
//
// Call verify_webhook() in the handler of your webhook with the secret the subscription
// answered with (whsec_…), the request's headers and its raw body:
//
//   $body = file_get_contents('php://input');
//   $ok = verify_webhook($secret, $_SERVER['HTTP_WEBHOOK_ID'], $_SERVER['HTTP_WEBHOOK_TIMESTAMP'],
//                        $_SERVER['HTTP_WEBHOOK_SIGNATURE'], $body);
//   http_response_code($ok ? 204 : 401);

const WEBHOOK_TOLERANCE_SECONDS = 300;

function verify_webhook(string $secret, string $id, string $timestamp, string $signatures, string $body): bool
{
    if (!ctype_digit($timestamp) || abs(time() - (int) $timestamp) > WEBHOOK_TOLERANCE_SECONDS) {
        return false; // a delivery replayed long after it was sent
    }
    $key = base64_decode(preg_replace('/^whsec_/', '', $secret), true);
    if ($key === false) {
        return false;
    }
    $expected = base64_encode(hash_hmac('sha256', "$id.$timestamp.$body", $key, true));
    // While a secret is being rotated, a delivery carries one signature per secret.
    foreach (explode(' ', $signatures) as $signature) {
        [$version, $value] = array_pad(explode(',', $signature, 2), 2, '');
        if ($version === 'v1' && hash_equals($expected, $value)) {
            return true;
        }
    }
    return false;
}
